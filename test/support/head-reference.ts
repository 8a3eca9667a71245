import { readHeadFiles } from '../../src/export/bundle.js';

/**
 * A saved head's probabilities on raw (unnormalised) cache features, computed here in float64 from its files:
 * its normalisation (none, l2, or (x - mean) / std), the dense layers (ReLU between), softmax(z / T), with T the head's own unless given. An independent reference for predict, bundle and train-head.
 */
export async function plainProbabilities(headDir: string, raw: Float32Array, count: number, temperature?: number) {
  const head = await readHeadFiles(headDir);
  const t = temperature ?? head.info.temperature ?? 1;
  const n = head.info.normalization;
  const dim = head.layers[0]!.shape[0];
  const classes = head.layers.at(-1)!.shape[1];
  const out = new Float64Array(count * classes);
  for (let r = 0; r < count; r++) {
    let x = Array.from(raw.subarray(r * dim, (r + 1) * dim), Number);
    if (n.kind === 'l2') x = x.map((v) => v / Math.hypot(...x));
    if (n.kind === 'standard') x = x.map((v, d) => (v - n.mean![d]!) / n.std![d]!);
    head.layers.forEach((l, li) => {
      const y = Array.from(l.bias, Number);
      for (let i = 0; i < l.shape[0]; i++)
        for (let j = 0; j < l.shape[1]; j++) y[j]! += x[i]! * l.kernel[i * l.shape[1] + j]!;
      x = li + 1 < head.layers.length ? y.map((v) => Math.max(0, v)) : y;
    });
    const m = Math.max(...x);
    const e = x.map((v) => Math.exp((v - m) / t));
    const s = e.reduce((a, b) => a + b, 0);
    e.forEach((v, j) => (out[r * classes + j] = v / s));
  }
  return { probabilities: out, classes };
}
