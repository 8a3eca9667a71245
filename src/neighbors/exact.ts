/**
 * Exact k-nearest-neighbour search as blocked matrix products: a block of queries times a block of reference rows
 * (onnxruntime's MLAS sgemm, `BlockProduct`), each block's distances folded into a bounded max-heap per query and
 * then dropped, so memory is O(block² + queries × k) and never the whole distance matrix.
 *
 * The fold is the hot loop once the product is fast (a 64-d self-kNN spends most of its time there): each block row
 * is scanned against its heap's current worst distance, and only the rare candidate that beats it reaches the heap.
 * Reference rows arrive in ascending index order, so a candidate that merely ties the worst kept one loses the tie
 * (the kept one has the lower index) and the plain comparison is the whole order.
 *
 * The products round through float32; the k survivors of each query are re-scored in float64 before the final sort,
 * so reported distances are as exact as the inputs (the float32 pass only chooses candidates, and a candidate it
 * misorders by ~1e-7 is one whose distance ties the k-th to that precision).
 */
import { invalidParameter } from '../errors.js';
import { BlockProduct } from './product.js';

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
  /** A `BlockProduct` to reuse (its sessions stay open); one is made and disposed otherwise. */
  product?: BlockProduct;
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
  const product = options.product ?? new BlockProduct();
  if (options.prepared && options.prepared.norms.length !== referenceCount)
    throw invalidParameter('prepared', `norms of ${referenceCount} reference rows`, `${options.prepared.norms.length}`);
  // A reference that several query blocks will scan is normalised once (when it fits), not once per query block.
  const prepared =
    options.prepared ?? (queryCount > qBlock ? prepareReference(reference, referenceCount, dim, metric) : undefined);
  const refNorms = prepared?.norms ?? rowNorms(reference, referenceCount, dim);
  const queryNorms = metric === 'cosine' ? rowNorms(query, queryCount, dim) : null;
  // Squared norms summed directly, not squared back from the norms: sqrt then square rounds, and on rows whose
  // distances tie exactly (duplicates, quantised features) that rounding would pick the tie's winner, not the index.
  const refSquared = metric === 'l2' ? rowSquares(reference, referenceCount, dim) : null;
  const querySquared = metric === 'l2' ? rowSquares(query, queryCount, dim) : null;
  const indices = new Int32Array(queryCount * k).fill(-1);
  const distances = new Float32Array(queryCount * k).fill(Infinity);
  try {
    for (let q0 = 0; q0 < queryCount; q0 += qBlock) {
      const qn = Math.min(qBlock, queryCount - q0);
      const qRows = blockRows(query, q0, qn, dim, queryNorms);
      const heaps = new TopK(qn, k);
      for (let r0 = 0; r0 < referenceCount; r0 += rBlock) {
        const rn = Math.min(rBlock, referenceCount - r0);
        const rRows = prepared?.unit
          ? prepared.unit.subarray(r0 * dim, (r0 + rn) * dim)
          : blockRows(reference, r0, rn, dim, metric === 'cosine' ? refNorms : null);
        const dots = await product.abt(qRows, rRows, qn, dim, rn);
        if (refSquared) foldL2(heaps, dots, q0, qn, r0, rn, querySquared!, refSquared, excludeSelf);
        else foldCosine(heaps, dots, q0, qn, r0, rn, excludeSelf);
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
    if (!options.product) await product.dispose();
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

function rowSquares(x: Float32Array, count: number, dim: number): Float64Array {
  const squares = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    let s = 0;
    for (let d = i * dim, end = d + dim; d < end; d++) s += x[d]! * x[d]!;
    squares[i] = s;
  }
  return squares;
}

function rowNorms(x: Float32Array, count: number, dim: number): Float64Array {
  return rowSquares(x, count, dim).map(Math.sqrt);
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

/** cosine: distance = 1 − dot of unit rows; a block row is scanned against its heap's worst kept distance. */
function foldCosine(
  heaps: TopK,
  dots: Float32Array,
  q0: number,
  qn: number,
  r0: number,
  rn: number,
  excludeSelf: boolean,
): void {
  for (let i = 0; i < qn; i++) {
    const self = excludeSelf ? q0 + i - r0 : -1;
    const row = i * rn;
    let worst = heaps.worst(i);
    for (let j = 0; j < rn; j++) {
      const d = 1 - dots[row + j]!;
      // `!(d >= worst)` rather than `d < worst`: a NaN distance reaches the heap, which decides as it always did.
      if (!(d >= worst) && j !== self) {
        heaps.offer(i, d, r0 + j);
        worst = heaps.worst(i);
      }
    }
  }
}

/** l2: squared distance ‖q‖² + ‖r‖² − 2·dot (the heap's order without a sqrt per pair), scanned as `foldCosine`. */
function foldL2(
  heaps: TopK,
  dots: Float32Array,
  q0: number,
  qn: number,
  r0: number,
  rn: number,
  querySquared: Float64Array,
  refSquared: Float64Array,
  excludeSelf: boolean,
): void {
  for (let i = 0; i < qn; i++) {
    const qSquared = querySquared[q0 + i]!;
    const self = excludeSelf ? q0 + i - r0 : -1;
    const row = i * rn;
    let worst = heaps.worst(i);
    for (let j = 0; j < rn; j++) {
      const d = Math.max(0, qSquared + refSquared[r0 + j]! - 2 * dots[row + j]!);
      if (!(d >= worst) && j !== self) {
        heaps.offer(i, d, r0 + j);
        worst = heaps.worst(i);
      }
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

  /** The distance a candidate must beat to enter `row`'s heap: its root once full, Infinity before. */
  worst(row: number): number {
    return this.size[row]! < this.k ? Infinity : this.d[row * this.k]!;
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
