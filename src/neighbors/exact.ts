export type Metric = 'cosine' | 'l2';

/** k nearest reference rows for each query row, ascending distance, ties → lower reference index.
 *  cosine distance = 1 − cos(q, r) on l2-normalised rows; l2 = Euclidean distance (not squared).
 *  excludeSelf: query and reference are the same rows; row i never lists itself.
 *  indices/distances are queryCount × k, row-major; fewer than k available → index -1, distance Infinity.
 *
 *  Placeholder with the neighbour engine's contract (issue 24): a brute-force scan, replaced by the engine's
 *  blocked onnxruntime search at merge. */
export function exactKnn(
  query: Float32Array,
  queryCount: number,
  reference: Float32Array,
  referenceCount: number,
  dim: number,
  options: { k: number; metric: Metric; excludeSelf?: boolean },
): Promise<{ indices: Int32Array; distances: Float32Array }> {
  const { k, metric, excludeSelf = false } = options;
  const indices = new Int32Array(queryCount * k).fill(-1);
  const distances = new Float32Array(queryCount * k).fill(Infinity);
  const refNorms = rowNorms(reference, referenceCount, dim);
  const queryNorms = rowNorms(query, queryCount, dim);
  const dist = new Float64Array(referenceCount);
  const order: number[] = [];
  for (let q = 0; q < queryCount; q++) {
    const qo = q * dim;
    order.length = 0;
    for (let r = 0; r < referenceCount; r++) {
      if (excludeSelf && r === q) continue;
      const ro = r * dim;
      let d = 0;
      if (metric === 'cosine') {
        let dot = 0;
        for (let j = 0; j < dim; j++) dot += query[qo + j]! * reference[ro + j]!;
        const denom = queryNorms[q]! * refNorms[r]!;
        d = 1 - (denom > 0 ? dot / denom : 0);
      } else {
        for (let j = 0; j < dim; j++) {
          const diff = query[qo + j]! - reference[ro + j]!;
          d += diff * diff;
        }
        d = Math.sqrt(d);
      }
      dist[r] = d;
      order.push(r);
    }
    order.sort((a, b) => dist[a]! - dist[b]! || a - b);
    const take = Math.min(k, order.length);
    for (let i = 0; i < take; i++) {
      indices[q * k + i] = order[i]!;
      distances[q * k + i] = dist[order[i]!]!;
    }
  }
  return Promise.resolve({ indices, distances });
}

function rowNorms(x: Float32Array, rows: number, dim: number): Float64Array {
  const norms = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += x[i * dim + j]! ** 2;
    norms[i] = Math.sqrt(s);
  }
  return norms;
}
