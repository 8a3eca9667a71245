import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StandardAccumulator, applyNormalization, fitNormalization } from '../../src/head/normalize.js';

describe('normalisation', () => {
  it('l2 makes each row unit length and leaves zero rows alone', () => {
    const f = Float32Array.from([3, 4, 0, 0]);
    applyNormalization({ kind: 'l2' }, f, 2, 2);
    assert.deepEqual(
      [...f].map((v) => Number(v.toFixed(6))),
      [0.6, 0.8, 0, 0],
    );
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
  it('one-shot and streaming fits equal an independent two-pass mean and population std', () => {
    const [count, dim] = [10, 4];
    // Large offset, small spread: the case where E[x²] − E[x]² loses precision in float32.
    const data = Float32Array.from({ length: count * dim }, (_, i) => 1000 + Math.sin(i) * 3);
    const twoPass = Array.from({ length: dim }, (_, d) => {
      let mean = 0;
      for (let r = 0; r < count; r++) mean += data[r * dim + d]!;
      mean /= count;
      let squares = 0;
      for (let r = 0; r < count; r++) squares += (data[r * dim + d]! - mean) ** 2;
      return { mean, std: Math.sqrt(squares / count) };
    });
    const one = fitNormalization('standard', data, count, dim);
    const acc = new StandardAccumulator(dim);
    acc.add(data.subarray(0, 16), 4);
    acc.add(data.subarray(16), 6);
    const streamed = acc.result();
    for (const fitted of [one, streamed]) {
      twoPass.forEach(({ mean, std }, d) => {
        assert.ok(
          Math.abs(fitted.mean![d]! - mean) < 1e-9 * Math.abs(mean),
          `mean[${d}] ${fitted.mean![d]} vs ${mean}`,
        );
        assert.ok(Math.abs(fitted.std![d]! - std) < 1e-6 * std, `std[${d}] ${fitted.std![d]} vs ${std}`);
      });
    }
  });
});
