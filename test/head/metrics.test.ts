import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  calibrationReport,
  classificationMetrics,
  eceSamplingFloor,
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

/** Rank of the true class in row r (0 = best), ties to the lower class index: what topK's order means. */
function rankOfTruth(p: Float32Array, classes: number, r: number, y: number): number {
  let rank = 0;
  for (let c = 0; c < classes; c++) {
    const v = p[r * classes + c]!;
    const t = p[r * classes + y]!;
    if (v > t || (v === t && c < y)) rank++;
  }
  return rank;
}

describe("ECE's sampling floor", () => {
  /** 400 rows of 5-class probabilities, and labels drawn from them (`sharpen` > 1 draws from a sharper softmax). */
  function rows(seed: number) {
    const random = seededRandom(seed);
    const classes = 5;
    const logits = Float32Array.from({ length: 400 * classes }, () => 3 * random());
    return { classes, probabilities: softmaxRows(logits, classes, 1), logits };
  }
  function drawLabels(probabilities: Float32Array, classes: number, random: () => number): Int32Array {
    return Int32Array.from({ length: probabilities.length / classes }, (_, r) => {
      let u = random();
      for (let c = 0; c < classes - 1; c++) if ((u -= probabilities[r * classes + c]!) < 0) return c;
      return classes - 1;
    });
  }

  it('equals the ECE that a calibrated head shows on fresh labels: mean within 10 %, about 5 % of draws above p95', () => {
    const { classes, probabilities } = rows(1);
    const floor = eceSamplingFloor(probabilities, classes);
    const random = seededRandom(7);
    const eces = Array.from(
      { length: 400 },
      () => expectedCalibrationError(probabilities, drawLabels(probabilities, classes, random), classes).ece,
    );
    const mean = eces.reduce((a, b) => a + b, 0) / eces.length;
    assert.ok(Math.abs(floor.mean - mean) < 0.1 * mean, `floor ${floor.mean} vs measured ${mean}`);
    const above = eces.filter((e) => e > floor.p95).length / eces.length;
    assert.ok(above > 0.01 && above < 0.12, `${above} of calibrated draws above p95 ${floor.p95}`);
    // Four times the rows: half the floor (it falls as 1/√n).
    const four = new Float32Array(probabilities.length * 4);
    for (let k = 0; k < 4; k++) four.set(probabilities, k * probabilities.length);
    const ratio = eceSamplingFloor(four, classes).mean / floor.mean;
    assert.ok(ratio > 0.4 && ratio < 0.6, `floor ratio ${ratio}`);
  });

  it('a miscalibrated head lands far above it, and the report carries it', () => {
    const { classes, probabilities, logits } = rows(2);
    // Labels from a softmax three times sharper: the probabilities are underconfident.
    const labels = drawLabels(softmaxRows(logits, classes, 1 / 3), classes, seededRandom(3));
    const report = calibrationReport(logits, labels, classes, 1, softmaxRows);
    assert.deepEqual(report.after.eceFloor, eceSamplingFloor(probabilities, classes));
    assert.ok(report.after.ece > 2 * report.after.eceFloor.p95, `${report.after.ece} vs ${report.after.eceFloor.p95}`);
  });
});

describe('top-5 at its edge', () => {
  it('the true class ranked exactly 5th counts, 6th does not (6 classes)', () => {
    const names = ['a', 'b', 'c', 'd', 'e', 'f'];
    // Both rows rank the classes a > b > c > d > e > f; the truth is e (5th) in row 0 and f (6th) in row 1.
    const order = [0.3, 0.25, 0.2, 0.12, 0.08, 0.05];
    const p = Float32Array.from([...order, ...order]);
    const m = classificationMetrics(p, Int32Array.from([4, 5]), names);
    assert.equal(m.top5, 1 / 2, 'row 0 (truth 5th) is a top-5 hit, row 1 (truth 6th) is not');
    assert.equal(m.top1, 0);
  });

  it('with exactly 5 classes every row is a top-5 hit, even with the truth last', () => {
    const p = Float32Array.from([0.4, 0.3, 0.15, 0.1, 0.05]);
    const m = classificationMetrics(p, Int32Array.from([4]), ['a', 'b', 'c', 'd', 'e']);
    assert.equal(m.top5, 1);
    assert.equal(classificationMetrics(p.slice(0, 4), Int32Array.from([3]), ['a', 'b', 'c', 'd']).top5, null);
  });

  it('top-1, top-5 and the confusion matrix equal a plain recomputation from ranks (random rows, 8 classes)', () => {
    const random = seededRandom(21);
    const [n, classes] = [400, 8];
    const names = Array.from({ length: classes }, (_, c) => `c${c}`);
    const labels = Int32Array.from({ length: n }, () => Math.floor(random() * classes));
    // Coarse values (multiples of 1/8) make ties common, so the tie rule matters too.
    const p = Float32Array.from({ length: n * classes }, () => Math.floor(random() * 8) / 8);
    const m = classificationMetrics(p, labels, names);
    const ranks = Array.from(labels, (y, r) => rankOfTruth(p, classes, r, y));
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5].map((k) => ranks.filter((x) => x === k).length > 0),
      [true, true, true, true, true, true],
      'the fixture has truths ranked 1st to 6th',
    );
    assert.equal(m.top1, ranks.filter((x) => x === 0).length / n);
    assert.equal(m.top5, ranks.filter((x) => x < 5).length / n);
    const confusion = names.map(() => new Array<number>(classes).fill(0));
    labels.forEach((y, r) => {
      const row = Array.from(p.subarray(r * classes, (r + 1) * classes));
      confusion[y]![row.indexOf(Math.max(...row))]! += 1;
    });
    assert.deepEqual(m.confusion, confusion);
  });
});

describe('ECE weights each bin by its row count', () => {
  it('bins of unequal counts: count-weighted, not the mean over non-empty bins', () => {
    // Three rows at confidence 0.95, all right (gap 0.05), and one at 0.55, wrong (gap 0.55).
    const p = Float32Array.from([0.95, 0.05, 0.05, 0.95, 0.95, 0.05, 0.55, 0.45]);
    const labels = Int32Array.from([0, 1, 0, 1]);
    const { ece, bins } = expectedCalibrationError(p, labels, 2);
    const gapHigh = Math.abs(1 - Math.fround(0.95));
    const gapLow = Math.abs(0 - Math.fround(0.55));
    const countWeighted = (3 * gapHigh + 1 * gapLow) / 4; // 0.175
    const equalWeighted = (gapHigh + gapLow) / 2; // 0.3
    assert.ok(Math.abs(countWeighted - equalWeighted) > 0.1, 'the two weightings differ on this fixture');
    assert.ok(Math.abs(ece - countWeighted) < 1e-6, `ece ${ece}, count-weighted ${countWeighted}`);
    assert.deepEqual(
      bins.filter((b) => b.count > 0).map((b) => b.count),
      [1, 3],
    );
  });

  it('equals a plain recomputation on random rows (unequal bins, 3 classes, 15 and 10 bins)', () => {
    const random = seededRandom(5);
    const [n, classes] = [500, 3];
    const labels = Int32Array.from({ length: n }, () => Math.floor(random() * classes));
    const p = new Float32Array(n * classes);
    for (let r = 0; r < n; r++) {
      // Skewed towards confident rows, so the bins' counts differ a lot.
      const e = [0, 1, 2].map(() => Math.exp(8 * random() ** 3));
      const s = e[0]! + e[1]! + e[2]!;
      e.forEach((v, c) => (p[r * classes + c] = v / s));
    }
    for (const nbins of [15, 10]) {
      const sums = Array.from({ length: nbins }, () => ({ n: 0, conf: 0, right: 0 }));
      for (let r = 0; r < n; r++) {
        const row = Array.from(p.subarray(r * classes, (r + 1) * classes));
        const conf = Math.max(...row);
        // (lower, upper]: the bin is the number of inner edges k/nbins strictly below the confidence.
        let b = 0;
        for (let k = 1; k < nbins; k++) if (k / nbins < conf) b = k;
        sums[b]!.n++;
        sums[b]!.conf += conf;
        if (row.indexOf(conf) === labels[r]) sums[b]!.right++;
      }
      const filled = sums.filter((s) => s.n > 0);
      const counts = filled.map((s) => s.n);
      assert.ok(Math.max(...counts) > 2 * Math.min(...counts), `bins of unequal counts: ${counts.join(', ')}`);
      const reference = filled.reduce((e, s) => e + (s.n / n) * Math.abs(s.right / s.n - s.conf / s.n), 0);
      const equal = filled.reduce((e, s) => e + Math.abs(s.right / s.n - s.conf / s.n), 0) / filled.length;
      assert.ok(Math.abs(reference - equal) > 1e-3, 'the fixture tells the weightings apart');
      const got = expectedCalibrationError(p, labels, classes, nbins);
      assert.ok(Math.abs(got.ece - reference) < 1e-9, `${nbins} bins: ece ${got.ece}, reference ${reference}`);
      assert.deepEqual(
        got.bins.map((b) => b.count),
        sums.map((s) => s.n),
      );
    }
  });
});

describe('metrics: the edges a mutation run found untested', () => {
  it('no rows: zeros, no top-5, no bins filled, and a temperature of 1', () => {
    const none = new Float32Array(0);
    const labels = new Int32Array(0);
    const m = classificationMetrics(none, labels, ['a', 'b', 'c', 'd', 'e']);
    assert.deepEqual([m.count, m.top1, m.top5], [0, 0, null]);
    assert.equal(negativeLogLikelihood(none, labels, 5), 0);
    assert.equal(temperatureNll(none, labels, 5, 2), 0);
    const { ece, bins } = expectedCalibrationError(none, labels, 5);
    assert.equal(ece, 0);
    assert.ok(bins.every((b) => b.count === 0 && b.confidence === null && b.accuracy === null));
    assert.equal(fitTemperature(none, labels, 5, 2), 1);
  });

  it("bins are (k/n, (k+1)/n], with each filled bin its rows' mean confidence and accuracy", () => {
    // Confidences 0.95, 0.95 (right, wrong) and 0.65 (right); 10 bins.
    const p = Float32Array.from([0.95, 0.05, 0.05, 0.95, 0.65, 0.35]);
    const { bins } = expectedCalibrationError(p, Int32Array.from([0, 0, 0]), 2, 10);
    bins.forEach((b, k) => {
      assert.ok(Math.abs(b.lower - k / 10) < 1e-12 && Math.abs(b.upper - (k + 1) / 10) < 1e-12, `bin ${k}`);
    });
    assert.equal(bins[9]!.count, 2);
    assert.ok(Math.abs(bins[9]!.confidence! - Math.fround(0.95)) < 1e-7);
    assert.equal(bins[9]!.accuracy, 0.5);
    assert.equal(bins[6]!.count, 1);
    assert.ok(Math.abs(bins[6]!.confidence! - Math.fround(0.65)) < 1e-7);
    assert.equal(bins[6]!.accuracy, 1);
    assert.equal(bins[0]!.confidence, null);
  });

  it('ties: the lowest class index is the prediction (topK, the confusion matrix and ECE agree)', () => {
    const p = Float32Array.from([0.25, 0.25, 0.25, 0.25, 0.25]);
    assert.deepEqual(topK(p, 5, 0, 5), [0, 1, 2, 3, 4]);
    const halves = Float32Array.from([0.5, 0.5, 0.5, 0.5]);
    // Both rows predict class 0: right for the first, wrong for the second, at confidence 0.5.
    const { ece } = expectedCalibrationError(halves, Int32Array.from([0, 0]), 2);
    assert.ok(Math.abs(ece - 0.5) < 1e-9, `both right at confidence 0.5: |1 - 0.5| = 0.5, got ${ece}`);
    const wrong = expectedCalibrationError(halves, Int32Array.from([1, 1]), 2).ece;
    assert.ok(Math.abs(wrong - 0.5) < 1e-9, `both wrong at confidence 0.5: |0 - 0.5| = 0.5, got ${wrong}`);
    const mixed = expectedCalibrationError(halves, Int32Array.from([0, 1]), 2).ece;
    assert.ok(Math.abs(mixed) < 1e-9, `one right, one wrong: accuracy 0.5 = confidence, got ${mixed}`);
    const m = classificationMetrics(halves, Int32Array.from([1, 1]), ['a', 'b']);
    assert.deepEqual(m.confusion, [
      [0, 0],
      [2, 0],
    ]);
  });

  it('per-class accuracy is right / count for each class with rows', () => {
    // Class a: 3 rows, 2 right; class b: 2 rows, 1 right; class c: no rows.
    const p = Float32Array.from([0.8, 0.1, 0.1, 0.7, 0.2, 0.1, 0.1, 0.8, 0.1, 0.1, 0.8, 0.1, 0.6, 0.3, 0.1]);
    const m = classificationMetrics(p, Int32Array.from([0, 0, 0, 1, 1]), ['a', 'b', 'c']);
    assert.deepEqual(
      m.perClass.map((c) => [c.count, c.accuracy]),
      [
        [3, 2 / 3],
        [2, 1 / 2],
        [0, null],
      ],
    );
  });

  it('NLL with a temperature stays finite on huge logits (the max is taken of the scaled logits)', () => {
    const logits = Float32Array.from([1000, 0, 0, 1000]);
    const labels = Int32Array.from([0, 0]);
    // Row 0: right by 1000/T = 2000 → NLL ≈ 0; row 1: wrong by 2000 → NLL ≈ 2000. Mean ≈ 1000.
    const nll = temperatureNll(logits, labels, 2, 0.5);
    assert.ok(Math.abs(nll - 1000) < 1e-6, `${nll}`);
  });

  it('the calibration report carries the reliability bins of both softmaxes', () => {
    const logits = Float32Array.from([2, 0, 0, 1, 3, 1, 0.5, 0]);
    const labels = Int32Array.from([0, 1, 1, 0]);
    const report = calibrationReport(logits, labels, 2, 2, softmaxRows);
    assert.deepEqual(report.bins.before, expectedCalibrationError(softmaxRows(logits, 2, 1), labels, 2).bins);
    assert.deepEqual(report.bins.after, expectedCalibrationError(softmaxRows(logits, 2, 2), labels, 2).bins);
    assert.notDeepEqual(report.bins.before, report.bins.after);
  });
});
