/**
 * Two kinds of outlier. Far from everything: the mean cosine distance to the k nearest neighbours, flagged by
 * Tukey's fence, above Q3 + 1.5·IQR of that score over the split (quartiles interpolated linearly, as numpy's
 * default). Unlike any class: the cross-fitted probe spreads its probability evenly, measured as the entropy of
 * the predicted distribution over log(classes) (1 = uniform), flagged at or above a threshold.
 */
import type { Neighbours } from './knn.js';

/** Tukey's multiplier: the usual "outside" fence of a box plot. */
export const IQR_FENCE = 1.5;

export function meanNeighbourDistance(n: Neighbours, count: number): Float64Array {
  return Float64Array.from({ length: count }, (_, r) => {
    let sum = 0;
    let seen = 0;
    for (let i = 0; i < n.k; i++) {
      if (n.indices[r * n.k + i]! < 0) continue;
      sum += n.distances[r * n.k + i]!;
      seen++;
    }
    return seen > 0 ? sum / seen : 0;
  });
}

/** The q-quantile of `values`, linearly interpolated between order statistics (numpy's default). */
export function quantile(values: ArrayLike<number>, q: number): number {
  const sorted = Float64Array.from(values).sort();
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** The value above which Tukey's rule calls a score an outlier. */
export function tukeyFence(values: ArrayLike<number>, multiplier = IQR_FENCE): number {
  const q1 = quantile(values, 0.25);
  const q3 = quantile(values, 0.75);
  return q3 + multiplier * (q3 - q1);
}

/** Entropy of each row's distribution over log(classes): 1 for a uniform prediction, 0 for a certain one. */
export function normalisedEntropy(probabilities: Float32Array, classes: number): Float64Array {
  const rows = probabilities.length / classes;
  return Float64Array.from({ length: rows }, (_, r) => {
    let h = 0;
    for (let c = 0; c < classes; c++) {
      const p = probabilities[r * classes + c]!;
      if (p > 0) h -= p * Math.log(p);
    }
    return classes > 1 ? h / Math.log(classes) : 0;
  });
}
