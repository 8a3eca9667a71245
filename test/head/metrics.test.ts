import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  calibrationReport,
  classificationMetrics,
  expectedCalibrationError,
  fitTemperature,
  negativeLogLikelihood,
  temperatureNll,
  topK,
} from '../../src/head/metrics.js';
import { softmaxRows } from '../../src/head/model.js';
import { seededRandom } from '../../src/util/random.js';

describe('classification metrics', () => {
  it('top-1, top-5, per-class accuracy and the confusion matrix, by hand', () => {
    const names = ['a', 'b', 'c', 'd', 'e', 'f'];
    // Row r puts most mass on class (r % 6), except row 1 which prefers a and has its truth b second.
    const p = new Float32Array(3 * 6);
    p.set([0.5, 0.1, 0.1, 0.1, 0.1, 0.1], 0);
    p.set([0.4, 0.3, 0.1, 0.1, 0.05, 0.05], 6);
    p.set([0.0, 0.0, 0.1, 0.2, 0.3, 0.4], 12);
    const m = classificationMetrics(p, Int32Array.from([0, 1, 1]), names);
    assert.equal(m.top1, 1 / 3);
    assert.equal(m.top5, 2 / 3, 'row 2: truth b is ranked 6th (tied 0.0 with a, lower index first)');
    assert.deepEqual(m.confusion[0], [1, 0, 0, 0, 0, 0]);
    assert.deepEqual(m.confusion[1], [1, 0, 0, 0, 0, 1]);
    assert.deepEqual(
      m.perClass.map((c) => c.accuracy),
      [1, 0, null, null, null, null],
    );
    assert.deepEqual(topK(p, 6, 1, 2), [0, 1]);
  });
});

describe('calibration', () => {
  it('ECE with 15 bins and NLL, by hand', () => {
    const p = Float32Array.from([0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.55, 0.45]);
    const labels = Int32Array.from([0, 1, 1, 0]);
    // Confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.55 (right), each alone in its bin.
    const { ece, bins } = expectedCalibrationError(p, labels, 2);
    assert.ok(Math.abs(ece - (0.1 + 0.8 + 0.3 + 0.45) / 4) < 1e-6, `ece ${ece}`);
    assert.equal(bins.length, 15);
    assert.equal(bins[13]!.count, 1, '0.9 lies in (13/15, 14/15]');
    assert.deepEqual(
      bins.filter((b) => b.count > 0).map((b) => b.accuracy),
      [1, 1, 0, 1],
    );
    const nll = negativeLogLikelihood(p, labels, 2);
    assert.ok(Math.abs(nll - -(Math.log(0.9) + Math.log(0.2) + Math.log(0.7) + Math.log(0.55)) / 4) < 1e-6);
  });

  it('the fitted temperature minimises the NLL (checked against a fine scan of an independent NLL)', () => {
    const random = seededRandom(3);
    const [n, classes] = [200, 4];
    const labels = Int32Array.from({ length: n }, () => Math.floor(random() * classes));
    // Overconfident logits: the right class gets +3 most of the time, everything scaled by 4.
    const logits = Float32Array.from(
      { length: n * classes },
      (_, i) => 4 * ((random() < 0.7 && labels[Math.floor(i / classes)] === i % classes ? 3 : 0) + random()),
    );
    const nll = (t: number) => {
      let s = 0;
      for (let r = 0; r < n; r++) {
        const z = Array.from(logits.subarray(r * classes, (r + 1) * classes), (v) => v / t);
        s += Math.log(z.reduce((a, v) => a + Math.exp(v), 0)) - z[labels[r]!]!;
      }
      return s / n;
    };
    let [bestT, bestNll] = [1, Infinity];
    for (let t = 0.2; t <= 10; t += 0.001) if (nll(t) < bestNll) [bestT, bestNll] = [t, nll(t)];
    const fitted = fitTemperature(logits, labels, classes);
    assert.ok(Math.abs(fitted - bestT) < 0.01, `fitted ${fitted}, scan ${bestT}`);
    assert.ok(bestT > 1.5, 'these logits are overconfident');
    assert.ok(Math.abs(temperatureNll(logits, labels, classes, fitted) - bestNll) < 1e-6);
    const report = calibrationReport(logits, labels, classes, fitted, softmaxRows);
    assert.ok(report.after.nll < report.before.nll);
    assert.ok(Math.abs(report.before.nll - nll(1)) < 1e-5);
  });

  it('a prior on log T keeps a near-perfect hold-out from driving T to 0', () => {
    // Every row right with a margin: the plain NLL keeps falling as T shrinks.
    const logits = Float32Array.from([3, 0, 0, 3, 2.5, 0, 0, 4]);
    const labels = Int32Array.from([0, 1, 0, 1]);
    const plain = fitTemperature(logits, labels, 2);
    assert.ok(plain < 0.02, `plain ${plain}`);
    const withPrior = fitTemperature(logits, labels, 2, 2);
    // MAP: d/dβ [NLL(β)·n + λ(log β)²] = 0 at the fitted β = 1/T; check the derivative numerically.
    const objective = (t: number) => temperatureNll(logits, labels, 2, t) * 4 + 2 * Math.log(t) ** 2;
    const h = 1e-4;
    assert.ok(
      objective(withPrior) <= objective(withPrior * (1 + h)) && objective(withPrior) <= objective(withPrior * (1 - h)),
    );
    assert.ok(withPrior > 0.2 && withPrior < 1, `with prior ${withPrior}`);
  });

  it('softmax with a temperature divides the logits', () => {
    const p = softmaxRows(Float32Array.from([2, 0, Math.log(3), 0]), 2, 2);
    assert.ok(Math.abs(p[0]! - Math.exp(1) / (Math.exp(1) + 1)) < 1e-6);
    assert.ok(Math.abs(p[2]! - Math.sqrt(3) / (Math.sqrt(3) + 1)) < 1e-6);
  });
});
