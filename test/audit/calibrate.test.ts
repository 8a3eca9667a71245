/** The temperature refitted on the rows confident learning keeps (src/audit/calibrate.ts), on synthetic logits. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { calibrateOnKeptLabels } from '../../src/audit/calibrate.js';
import { confidentLearning } from '../../src/audit/confident.js';
import { fitTemperature } from '../../src/head/metrics.js';
import { softmaxRows } from '../../src/head/model.js';
import { TEMPERATURE_PRIOR } from '../../src/head/plan.js';
import { seededRandom } from '../../src/util/random.js';

/**
 * Logits of a probe that is right about the true class (a margin of 4–10, so softmax at T = 1 is well calibrated
 * against the true labels), with `flip` of the given labels moved uniformly to another class.
 */
function flippedLogits(rows: number, classes: number, flip: number, seed: number) {
  const random = seededRandom(seed);
  const logits = new Float32Array(rows * classes);
  const labels = new Int32Array(rows);
  const flipped = new Set<number>();
  for (let r = 0; r < rows; r++) {
    const truth = r % classes;
    for (let c = 0; c < classes; c++) logits[r * classes + c] = 2 * random() + (c === truth ? 4 + 6 * random() : 0);
    labels[r] = truth;
    if (random() < flip) {
      labels[r] = (truth + 1 + Math.floor(random() * (classes - 1))) % classes;
      flipped.add(r);
    }
  }
  return { logits, labels, flipped };
}

function recall(flagged: Int32Array, flipped: Set<number>): number {
  return [...flagged].filter((r) => flipped.has(r)).length / flipped.size;
}

describe('temperature refitted on the labels confident learning keeps', () => {
  for (const seed of [1, 2, 3]) {
    it(`seed ${seed}: a fixed point, sharper than the all-rows fit, and more of the flips found`, () => {
      const classes = 10;
      const { logits, labels, flipped } = flippedLogits(1000, classes, 0.05, seed);
      const c = calibrateOnKeptLabels(logits, labels, classes, 'prune_by_noise_rate');
      const allRows = fitTemperature(logits, labels, classes, TEMPERATURE_PRIOR);
      assert.equal(c.rounds[0]!.temperature, allRows, 'the first round is the usual fit on every row');
      assert.ok(c.settled, JSON.stringify(c.rounds));
      // The flipped rows' huge NLL flattens the all-rows fit; without them the fit is sharper.
      assert.ok(c.temperature < allRows, `${c.temperature} < ${allRows}`);
      // At the fixed point the temperature is the fit on exactly the rows not flagged under it.
      const flags = confidentLearning(c.probabilities, labels, classes).flagged;
      const kept = [...labels.keys()].filter((r) => !flags.includes(r));
      const keptLogits = new Float32Array(kept.length * classes);
      kept.forEach((r, i) => keptLogits.set(logits.subarray(r * classes, (r + 1) * classes), i * classes));
      const refit = fitTemperature(
        keptLogits,
        Int32Array.from(kept, (r) => labels[r]!),
        classes,
        TEMPERATURE_PRIOR,
      );
      assert.ok(Math.abs(refit - c.temperature) < 1e-6, `${refit} vs ${c.temperature}`);
      assert.deepEqual(Array.from(c.probabilities), Array.from(softmaxRows(logits, classes, c.temperature)));
      const before = confidentLearning(softmaxRows(logits, classes, allRows), labels, classes).flagged;
      assert.ok(
        recall(flags, flipped) > recall(before, flipped),
        `recall ${recall(flags, flipped)} vs ${recall(before, flipped)} at the all-rows temperature`,
      );
    });
  }

  it('stops at the round cap and says it did not settle', () => {
    const { logits, labels } = flippedLogits(500, 5, 0.1, 4);
    const c = calibrateOnKeptLabels(logits, labels, 5, 'prune_by_noise_rate', 1);
    assert.equal(c.rounds.length, 1);
    assert.equal(c.settled, false);
  });
});
