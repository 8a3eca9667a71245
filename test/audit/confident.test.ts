import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FILTERS, confidentLearning, labelQuality, suggestedLabel } from '../../src/audit/confident.js';
import { seededRandom } from '../../src/util/random.js';
import { needsNumpy, referenceConfidentLearning } from '../support/confident.js';

/** Softmax rows around each row's true class, with `flip` of the given labels moved to another class. */
function noisyProblem(rows: number, classes: number, flip: number, seed: number) {
  const random = seededRandom(seed);
  const probabilities = new Float32Array(rows * classes);
  const labels = new Int32Array(rows);
  const truth = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    truth[r] = r % classes;
    const logits = Array.from({ length: classes }, (_, c) => random() * 2 + (c === truth[r] ? 2 + 3 * random() : 0));
    const max = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - max));
    const sum = e.reduce((a, b) => a + b, 0);
    e.forEach((v, c) => (probabilities[r * classes + c] = v / sum));
    labels[r] = random() < flip ? (truth[r]! + 1 + Math.floor(random() * (classes - 1))) % classes : truth[r]!;
  }
  return { probabilities, labels, truth };
}

describe('confident learning against the numpy reference written from the paper', () => {
  for (const [rows, classes, flip, seed] of [
    [600, 3, 0.1, 1],
    [2000, 10, 0.05, 2],
    [300, 2, 0.2, 3],
    [500, 7, 0.3, 4],
  ] as const) {
    it(
      `${rows} rows, ${classes} classes, ${flip * 100}% flipped: the same flags, joint and thresholds`,
      {
        skip: needsNumpy,
      },
      () => {
        const { probabilities, labels } = noisyProblem(rows, classes, flip, seed);
        const ours = confidentLearning(probabilities, labels, classes);
        const ref = referenceConfidentLearning(probabilities, labels, classes);
        assert.deepEqual(Array.from(ours.flagged), ref.flagged);
        assert.ok(ours.flagged.length > 0, 'some rows flagged');
        assert.deepEqual(Array.from(ours.confidentJoint), ref.confidentJoint);
        ours.joint.forEach((v, i) => assert.ok(Math.abs(v - ref.joint[i]!) < 1e-12, `joint ${i}`));
        ours.noiseMatrix.forEach((v, i) => assert.ok(Math.abs(v - ref.noiseMatrix[i]!) < 1e-12, `noise ${i}`));
        ours.thresholds.forEach((v, i) => assert.ok(Math.abs(v - ref.thresholds[i]!) < 1e-12, `threshold ${i}`));
      },
    );
  }

  it('every filter flags the same rows as the reference', { skip: needsNumpy }, () => {
    const { probabilities, labels } = noisyProblem(1500, 6, 0.1, 6);
    const sizes = new Set<number>();
    for (const filter of FILTERS) {
      const ours = confidentLearning(probabilities, labels, 6, filter);
      const ref = referenceConfidentLearning(probabilities, labels, 6, filter);
      assert.deepEqual(Array.from(ours.flagged), ref.flagged, filter);
      sizes.add(ours.flagged.length);
    }
    assert.ok(sizes.size > 2, 'the filters differ on this problem');
  });

  it('a class with no rows is never confidently predicted, as in the reference', { skip: needsNumpy }, () => {
    const { probabilities, labels } = noisyProblem(400, 4, 0.1, 5);
    labels.forEach((y, r) => (labels[r] = y === 3 ? 0 : y));
    const ours = confidentLearning(probabilities, labels, 4);
    const ref = referenceConfidentLearning(probabilities, labels, 4);
    assert.equal(ours.thresholds[3], Infinity);
    assert.equal(ref.thresholds[3], null);
    assert.deepEqual(Array.from(ours.flagged), ref.flagged);
    for (let i = 0; i < 4; i++) assert.equal(ours.confidentJoint[i * 4 + 3], 0);
  });
});

describe('confident learning by hand', () => {
  it('flags the row whose prediction confidently says another class', () => {
    // Class 0 rows: 0.9, 0.8, 0.1 (the last is really class 1); class 1 rows: 0.9, 0.7. Thresholds: 0.6 and 0.8.
    const p = Float32Array.from([0.9, 0.1, 0.8, 0.2, 0.1, 0.9, 0.1, 0.9, 0.3, 0.7]);
    const labels = Int32Array.from([0, 0, 0, 1, 1]);
    const cl = confidentLearning(p, labels, 2);
    assert.ok(Math.abs(cl.thresholds[0]! - 0.6) < 1e-6 && Math.abs(cl.thresholds[1]! - 0.8) < 1e-6);
    // Row 2 (given 0) is confidently 1 (0.9 ≥ 0.8); row 4 (0.7) is below both thresholds and counts nowhere.
    assert.deepEqual(Array.from(cl.confidentJoint), [2, 1, 0, 1]);
    // Calibrated: row 0 → [2/3·3, 1/3·3] = [2, 1]; row 1 → [0, 2]; total 5 → Q[0][1] = 0.2; n·Q = 1 row pruned.
    assert.ok(Math.abs(cl.joint[1]! - 0.2) < 1e-12);
    assert.deepEqual(Array.from(cl.flagged), [2]);
    assert.deepEqual(
      Array.from(cl.noiseMatrix).map((v) => Math.round(v * 1000) / 1000),
      [0.667, 0.333, 0, 1],
    );
    assert.equal(suggestedLabel(p, 2, 0, 2), 1);
    const sc = labelQuality(p, labels, 2, 'self_confidence');
    const nm = labelQuality(p, labels, 2, 'normalized_margin');
    assert.ok(Math.abs(sc[2]! - 0.1) < 1e-6 && Math.abs(nm[2]! + 0.8) < 1e-6 && Math.abs(nm[4]! - 0.4) < 1e-6);
  });
});
