import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StandardAccumulator, applyNormalization, fitNormalization } from '../../src/head/normalize.js';

describe('normalisation', () => {
  it('l2 makes each row unit length and leaves zero rows alone', () => {
    const f = Float32Array.from([3, 4, 0, 0]);
    applyNormalization({ kind: 'l2' }, f, 2, 2);
    assert.deepEqual([...f].map((v) => Number(v.toFixed(6))), [0.6, 0.8, 0, 0]);
  });
  it('standard uses the fitted statistics; constant dimensions map to 0', () => {
    const train = Float32Array.from([1, 5, 3, 5]);
    const stats = fitNormalization('standard', train, 2, 2);
    assert.deepEqual(stats.mean, [2, 5]);
    assert.deepEqual(stats.std, [1, 1]);
    const val = Float32Array.from([4, 5]);
    applyNormalization(stats, val, 1, 2);
    assert.deepEqual([...val], [2, 0]);
  });
  it('streaming accumulation equals the one-shot fit', () => {
    const data = Float32Array.from({ length: 40 }, (_, i) => Math.sin(i) * 10);
    const acc = new StandardAccumulator(4);
    acc.add(data.subarray(0, 16), 4);
    acc.add(data.subarray(16), 6);
    const one = fitNormalization('standard', data, 10, 4);
    acc.result().mean!.forEach((m, d) => assert.ok(Math.abs(m - one.mean![d]!) < 1e-9));
  });
});
