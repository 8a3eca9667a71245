/**
 * A second opinion from the neighbours (the idea of SimiFeat, Zhu et al. 2022): features of images that look alike
 * lie close together, so a row whose nearest neighbours mostly carry another label is probably mislabelled,
 * whatever a probe says. One exact k-nearest-neighbour search (cosine) over the split serves this and the
 * outlier score.
 */
import { exactKnn } from '../neighbors/exact.js';

export interface Neighbours {
  k: number;
  /** rows × k, ascending cosine distance; -1 where the split has fewer than k other rows. */
  indices: Int32Array;
  distances: Float32Array;
}

/** The k nearest other rows of each row of the split (the row itself never counts). */
export async function splitNeighbours(
  features: Float32Array,
  count: number,
  dim: number,
  k: number,
): Promise<Neighbours> {
  const { indices, distances } = await exactKnn(features, count, features, count, dim, {
    k,
    metric: 'cosine',
    excludeSelf: true,
  });
  return { k, indices, distances };
}

export interface Consensus {
  /** Per row: the share of its neighbours whose label differs from its own (0 = all agree). */
  disagreement: Float64Array;
  /** Per row: the label most of its neighbours carry (ties: the lower class index). */
  majority: Int32Array;
}

export function knnConsensus(n: Neighbours, labels: Int32Array, classes: number): Consensus {
  const count = labels.length;
  const disagreement = new Float64Array(count);
  const majority = new Int32Array(count);
  const votes = new Int32Array(classes);
  for (let r = 0; r < count; r++) {
    votes.fill(0);
    let seen = 0;
    for (let i = 0; i < n.k; i++) {
      const j = n.indices[r * n.k + i]!;
      if (j < 0) continue;
      votes[labels[j]!]! += 1;
      seen++;
    }
    disagreement[r] = seen > 0 ? (seen - votes[labels[r]!]!) / seen : 0;
    let best = 0;
    for (let c = 1; c < classes; c++) if (votes[c]! > votes[best]!) best = c;
    majority[r] = seen > 0 ? best : labels[r]!;
  }
  return { disagreement, majority };
}
