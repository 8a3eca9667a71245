/**
 * Feature normalisation for the head. Statistics come from the training split only and are saved with the head,
 * so validation, prediction and export apply exactly what training saw.
 */
export const NORMALIZATIONS = ['none', 'l2', 'standard'] as const;
export type NormalizationKind = (typeof NORMALIZATIONS)[number];

export interface Normalization {
  kind: NormalizationKind;
  /** Per-dimension mean and standard deviation (only for `standard`). */
  mean?: number[];
  std?: number[];
}

/** Mean and population std per dimension; a constant dimension gets std 1 so it maps to 0, not NaN. */
export function fitStandard(features: Float32Array, count: number, dim: number): Normalization {
  const accumulator = new StandardAccumulator(dim);
  accumulator.add(features, count);
  return accumulator.result();
}

export function fitNormalization(
  kind: NormalizationKind,
  features: Float32Array,
  count: number,
  dim: number,
): Normalization {
  return kind === 'standard' ? fitStandard(features, count, dim) : { kind };
}

/** Applies a normalisation in place to `count` rows of `dim` floats. */
export function applyNormalization(n: Normalization, features: Float32Array, count: number, dim: number): Float32Array {
  if (n.kind === 'l2') {
    for (let r = 0; r < count; r++) {
      const o = r * dim;
      let sum = 0;
      for (let d = 0; d < dim; d++) sum += features[o + d]! ** 2;
      const scale = sum > 0 ? 1 / Math.sqrt(sum) : 0;
      for (let d = 0; d < dim; d++) features[o + d]! *= scale;
    }
  } else if (n.kind === 'standard') {
    const mean = n.mean!;
    const std = n.std!;
    if (mean.length !== dim) throw new Error(`normalisation statistics are ${mean.length}-d but features are ${dim}-d`);
    for (let r = 0; r < count; r++) {
      const o = r * dim;
      for (let d = 0; d < dim; d++) features[o + d] = (features[o + d]! - mean[d]!) / std[d]!;
    }
  }
  return features;
}

/** Streaming fit of `standard` statistics over batches (float64 sums), for splits too large to hold in memory. */
export class StandardAccumulator {
  private readonly sum: Float64Array;
  private readonly squares: Float64Array;
  private count = 0;
  constructor(private readonly dim: number) {
    this.sum = new Float64Array(dim);
    this.squares = new Float64Array(dim);
  }
  add(features: Float32Array, count: number): void {
    for (let r = 0; r < count; r++) {
      const o = r * this.dim;
      for (let d = 0; d < this.dim; d++) {
        const v = features[o + d]!;
        this.sum[d]! += v;
        this.squares[d]! += v * v;
      }
    }
    this.count += count;
  }
  result(): Normalization {
    const n = Math.max(this.count, 1);
    const mean = Array.from(this.sum, (s) => s / n);
    const std = Array.from(this.squares, (q, d) => {
      const variance = q / n - mean[d]! ** 2;
      return variance > 1e-12 ? Math.sqrt(variance) : 1;
    });
    return { kind: 'standard', mean, std };
  }
}
