/** The stratified subsample the audit chooses C on above the probe's work limit (src/audit/crossfit.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stratifiedSample } from '../../src/audit/crossfit.js';

describe('stratified subsample for the selection of C', () => {
  // 3 classes of 600, 300 and 3 rows.
  const labels = Int32Array.from([...Array(600).fill(0), ...Array(300).fill(1), 2, 2, 2]);
  const keys = [...labels.keys()].map((r) => `img/${r}.jpg`);

  it('keeps each class in proportion, every row of a tiny class, ascending and without repeats', () => {
    const rows = stratifiedSample(labels, keys, 300, 0);
    const per = [0, 1, 2].map((c) => rows.filter((r) => labels[r] === c).length);
    assert.deepEqual(per, [Math.round((300 * 600) / 903), Math.round((300 * 300) / 903), 3]);
    assert.deepEqual(
      rows,
      [...new Set(rows)].sort((a, b) => a - b),
    );
  });

  it('depends on the keys and the seed, not on the row order', () => {
    const a = stratifiedSample(labels, keys, 300, 0).map((r) => keys[r]);
    const order = [...labels.keys()].reverse();
    const b = stratifiedSample(
      Int32Array.from(order, (r) => labels[r]!),
      order.map((r) => keys[r]!),
      300,
      0,
    ).map((r) => keys[order[r]!]);
    assert.deepEqual([...b].sort(), [...a].sort());
    assert.notDeepEqual(stratifiedSample(labels, keys, 300, 1), stratifiedSample(labels, keys, 300, 0));
  });
});
