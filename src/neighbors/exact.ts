/**
 * Exact k-nearest-neighbour search as blocked matrix products: a block of queries times a block of reference rows
 * (onnxruntime's MLAS sgemm through the head's `MatMul`), each block's distances folded into a bounded max-heap per
 * query and then dropped, so memory is O(block² + queries × k) and never the whole distance matrix.
 *
 * The products round through float32; the k survivors of each query are re-scored in float64 before the final sort,
 * so reported distances are as exact as the inputs (the float32 pass only chooses candidates, and a candidate it
 * misorders by ~1e-7 is one whose distance ties the k-th to that precision).
 */
import { MatMul } from '../head/probe/linalg.js';
import { invalidParameter } from '../errors.js';

export type Metric = 'cosine' | 'l2';
export const METRICS: readonly Metric[] = Object.freeze(['cosine', 'l2']);

export interface KnnOptions {
  k: number;
  metric: Metric;
  /** Query and reference are the same rows; row i never lists itself. */
  excludeSelf?: boolean;
  /** Queries per product (tuning; the default keeps a block's distances near 32 MB). */
  queryBlock?: number;
  /** Reference rows per product. */
  referenceBlock?: number;
  /** A `MatMul` to reuse (its sessions stay open); one is made and disposed otherwise. */
  matmul?: MatMul;
  /** The reference's norms (and unit rows) from `prepareReference`, for a reference searched many times. */
  prepared?: PreparedReference;
}

/** What every search of one reference recomputes otherwise: its row norms and, for cosine, its unit rows. */
export interface PreparedReference {
  norms: Float64Array;
  /** referenceCount × dim unit rows (cosine), or null: normalised block by block as usual. */
  unit: Float32Array | null;
}

/** Unit rows are kept only up to this many bytes; a larger reference is normalised per block, per search. */
const MAX_PREPARED_UNIT_BYTES = 256 * 1024 * 1024;

/** Norms (and unit rows for cosine) of a reference that will be searched again and again (serve's /similar). */
export function prepareReference(
  reference: Float32Array,
  referenceCount: number,
  dim: number,
  metric: Metric,
): PreparedReference {
  const norms = rowNorms(reference, referenceCount, dim);
  const keepUnit = metric === 'cosine' && referenceCount * dim * 4 <= MAX_PREPARED_UNIT_BYTES;
  return { norms, unit: keepUnit ? blockRows(reference, 0, referenceCount, dim, norms) : null };
}

export interface KnnResult {
  /** queryCount × k, row-major; -1 where fewer than k reference rows were available. */
  indices: Int32Array;
  /** queryCount × k, ascending per row; Infinity where the index is -1. */
  distances: Float32Array;
}

export const DEFAULT_QUERY_BLOCK = 1024;
export const DEFAULT_REFERENCE_BLOCK = 4096;

/**
 * k nearest reference rows for each query row, ascending distance, ties → lower reference index.
 * cosine distance = 1 − cos(q, r) on l2-normalised rows (a zero row is at distance 1 from everything, as in
 * scikit-learn); l2 = Euclidean distance (not squared).
 */
export async function exactKnn(
  query: Float32Array,
  queryCount: number,
  reference: Float32Array,
  referenceCount: number,
  dim: number,
  options: KnnOptions,
): Promise<KnnResult> {
  checkArguments(query, queryCount, reference, referenceCount, dim, options);
  const { k, metric } = options;
  const excludeSelf = options.excludeSelf ?? false;
  const qBlock = Math.max(1, options.queryBlock ?? DEFAULT_QUERY_BLOCK);
  const rBlock = Math.max(1, options.referenceBlock ?? DEFAULT_REFERENCE_BLOCK);
  const matmul = options.matmul ?? new MatMul();
  const prepared = options.prepared;
  if (prepared && prepared.norms.length !== referenceCount)
    throw invalidParameter('prepared', `norms of ${referenceCount} reference rows`, `${prepared.norms.length}`);
  const refNorms = prepared?.norms ?? rowNorms(reference, referenceCount, dim);
  const queryNorms = rowNorms(query, queryCount, dim);
  const indices = new Int32Array(queryCount * k).fill(-1);
  const distances = new Float32Array(queryCount * k).fill(Infinity);
  try {
    for (let q0 = 0; q0 < queryCount; q0 += qBlock) {
      const qn = Math.min(qBlock, queryCount - q0);
      const qRows = blockRows(query, q0, qn, dim, metric === 'cosine' ? queryNorms : null);
      const heaps = new TopK(qn, k);
      for (let r0 = 0; r0 < referenceCount; r0 += rBlock) {
        const rn = Math.min(rBlock, referenceCount - r0);
        const rRows = prepared?.unit
          ? prepared.unit.subarray(r0 * dim, (r0 + rn) * dim)
          : blockRows(reference, r0, rn, dim, metric === 'cosine' ? refNorms : null);
        const dots = await matmul.abt(qRows, rRows, qn, dim, rn);
        foldBlock(heaps, dots, q0, qn, r0, rn, metric, queryNorms, refNorms, excludeSelf);
      }
      for (let i = 0; i < qn; i++) {
        const rescored = rescore(heaps, i, query, q0 + i, reference, dim, metric);
        for (let j = 0; j < rescored.length; j++) {
          indices[(q0 + i) * k + j] = rescored[j]!.index;
          distances[(q0 + i) * k + j] = rescored[j]!.distance;
        }
      }
    }
  } finally {
    if (!options.matmul) await matmul.dispose();
  }
  return { indices, distances };
}

function checkArguments(
  query: Float32Array,
  queryCount: number,
  reference: Float32Array,
  referenceCount: number,
  dim: number,
  options: KnnOptions,
): void {
  if (!Number.isInteger(options.k) || options.k < 1) throw invalidParameter('k', 'a positive integer', options.k);
  if (!METRICS.includes(options.metric)) throw invalidParameter('metric', METRICS.join(' or '), options.metric);
  if (!Number.isInteger(dim) || dim < 1) throw invalidParameter('dim', 'a positive integer', dim);
  if (query.length < queryCount * dim)
    throw invalidParameter('query', `${queryCount} × ${dim} values`, `${query.length} values`);
  if (reference.length < referenceCount * dim)
    throw invalidParameter('reference', `${referenceCount} × ${dim} values`, `${reference.length} values`);
  if (options.excludeSelf && queryCount !== referenceCount)
    throw invalidParameter(
      'excludeSelf',
      'query and reference to be the same rows',
      `${queryCount} vs ${referenceCount} rows`,
    );
}

function rowNorms(x: Float32Array, count: number, dim: number): Float64Array {
  const norms = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    let s = 0;
    for (let d = i * dim, end = d + dim; d < end; d++) s += x[d]! * x[d]!;
    norms[i] = Math.sqrt(s);
  }
  return norms;
}

/** Rows [start, start+count) as their own array, divided by their norms when given (cosine). */
function blockRows(
  x: Float32Array,
  start: number,
  count: number,
  dim: number,
  norms: Float64Array | null,
): Float32Array {
  const view = x.subarray(start * dim, (start + count) * dim);
  if (!norms) return view;
  const out = new Float32Array(count * dim);
  for (let i = 0; i < count; i++) {
    const n = norms[start + i]!;
    if (n === 0) continue;
    const inv = 1 / n;
    for (let d = i * dim, end = d + dim; d < end; d++) out[d] = view[d]! * inv;
  }
  return out;
}

function foldBlock(
  heaps: TopK,
  dots: Float64Array,
  q0: number,
  qn: number,
  r0: number,
  rn: number,
  metric: Metric,
  queryNorms: Float64Array,
  refNorms: Float64Array,
  excludeSelf: boolean,
): void {
  for (let i = 0; i < qn; i++) {
    const qSquared = queryNorms[q0 + i]! ** 2;
    const self = excludeSelf ? q0 + i - r0 : -1;
    const row = i * rn;
    for (let j = 0; j < rn; j++) {
      if (j === self) continue;
      const dot = dots[row + j]!;
      // Squared l2 keeps the heap's order without a sqrt per pair.
      const d = metric === 'cosine' ? 1 - dot : Math.max(0, qSquared + refNorms[r0 + j]! ** 2 - 2 * dot);
      heaps.offer(i, d, r0 + j);
    }
  }
}

/** A query's survivors re-scored in float64 and sorted by (distance, index). */
function rescore(
  heaps: TopK,
  i: number,
  query: Float32Array,
  qRow: number,
  reference: Float32Array,
  dim: number,
  metric: Metric,
): { index: number; distance: number }[] {
  const out: { index: number; distance: number }[] = [];
  for (const index of heaps.members(i))
    out.push({ index, distance: exactDistance(query, qRow, reference, index, dim, metric) });
  return out.sort((a, b) => a.distance - b.distance || a.index - b.index);
}

/** One pair's distance in float64: the reference the blocked pass is checked against, too. */
export function exactDistance(
  a: Float32Array,
  aRow: number,
  b: Float32Array,
  bRow: number,
  dim: number,
  metric: Metric,
): number {
  const ao = aRow * dim;
  const bo = bRow * dim;
  if (metric === 'l2') {
    let s = 0;
    for (let d = 0; d < dim; d++) s += (a[ao + d]! - b[bo + d]!) ** 2;
    return Math.sqrt(s);
  }
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let d = 0; d < dim; d++) {
    dot += a[ao + d]! * b[bo + d]!;
    na += a[ao + d]! ** 2;
    nb += b[bo + d]! ** 2;
  }
  return na === 0 || nb === 0 ? 1 : 1 - dot / Math.sqrt(na * nb);
}

/**
 * A bounded max-heap of (distance, index) per query, flat in typed arrays: the root is the worst kept candidate, so
 * most offers are rejected by one comparison.
 */
export class TopK {
  private readonly d: Float64Array;
  private readonly idx: Int32Array;
  private readonly size: Int32Array;

  constructor(
    readonly rows: number,
    readonly k: number,
  ) {
    this.d = new Float64Array(rows * k);
    this.idx = new Int32Array(rows * k);
    this.size = new Int32Array(rows);
  }

  /** (d1, i1) ranks after (d2, i2): the tie rule (lower index first) is part of the order. */
  private static worse(d1: number, i1: number, d2: number, i2: number): boolean {
    return d1 > d2 || (d1 === d2 && i1 > i2);
  }

  offer(row: number, distance: number, index: number): void {
    const k = this.k;
    const base = row * k;
    const n = this.size[row]!;
    if (n < k) {
      let c = n;
      while (c > 0) {
        const p = (c - 1) >> 1;
        if (!TopK.worse(distance, index, this.d[base + p]!, this.idx[base + p]!)) break;
        this.d[base + c] = this.d[base + p]!;
        this.idx[base + c] = this.idx[base + p]!;
        c = p;
      }
      this.d[base + c] = distance;
      this.idx[base + c] = index;
      this.size[row] = n + 1;
      return;
    }
    if (!TopK.worse(this.d[base]!, this.idx[base]!, distance, index)) return;
    let c = 0;
    for (;;) {
      const l = 2 * c + 1;
      if (l >= k) break;
      const r = l + 1;
      let w = l;
      if (r < k && TopK.worse(this.d[base + r]!, this.idx[base + r]!, this.d[base + l]!, this.idx[base + l]!)) w = r;
      if (!TopK.worse(this.d[base + w]!, this.idx[base + w]!, distance, index)) break;
      this.d[base + c] = this.d[base + w]!;
      this.idx[base + c] = this.idx[base + w]!;
      c = w;
    }
    this.d[base + c] = distance;
    this.idx[base + c] = index;
  }

  members(row: number): Int32Array {
    return this.idx.subarray(row * this.k, row * this.k + this.size[row]!);
  }
}
