/**
 * Streaming a split's rows for training: parts in a seeded shuffled order, rows through a bounded shuffle buffer,
 * so memory is one part plus the buffer whatever the split's size. Parts are read by `FeatureCache.batches`, so the
 * stream inherits its last-write-wins merge (a superseded or removed row never appears) and its part checks.
 *
 * Why a buffer and not a full permutation: a permutation of a split that does not fit in memory needs random reads
 * of single rows; part order × buffer is what WebDataset and tf.data do for the same reason. Rows of one part are
 * neighbours in extraction order (often one class), so the buffer should hold several parts' worth of rows.
 */
import { seededRandom, shuffled } from '../util/random.js';
import { FeatureCache, type LatestRecord } from './reader.js';

export interface RowBatch {
  count: number;
  dim: number;
  /** count × dim, row-major. */
  features: Float32Array;
  /** Class index per row, -1 for unlabelled rows. */
  labels: Int32Array;
  /** The rows' paths (the cache's keys). */
  keys: string[];
}

export interface StreamOptions {
  /** Seeds the part order and the buffer's draws: same seed, same cache → same row order. */
  seed: number;
  /** Rows the shuffle buffer holds (its memory: bufferRows × dim × 4 bytes). */
  bufferRows: number;
  /** Rows per yielded batch (the last one may be shorter). */
  batchRows: number;
  /** Keep only rows for which this is true (e.g. labelled, not held out). */
  keep?: (key: string, label: number) => boolean;
  /** The split's newest records, when the caller already has them (saves reading the part indexes again). */
  latest?: Map<string, LatestRecord>;
}

/** Collects drawn rows into batches of `batchRows` and hands each full one to the caller. */
class BatchCollector {
  private features: Float32Array;
  private labels: Int32Array;
  private keys: string[] = [];
  constructor(
    private readonly dim: number,
    private readonly batchRows: number,
  ) {
    this.features = new Float32Array(batchRows * dim);
    this.labels = new Int32Array(batchRows);
  }
  get full(): boolean {
    return this.keys.length === this.batchRows;
  }
  push(features: Float32Array, label: number, key: string): void {
    this.features.set(features, this.keys.length * this.dim);
    this.labels[this.keys.length] = label;
    this.keys.push(key);
  }
  take(): RowBatch | null {
    const count = this.keys.length;
    if (count === 0) return null;
    const batch: RowBatch = {
      count,
      dim: this.dim,
      features: count === this.batchRows ? this.features : this.features.slice(0, count * this.dim),
      labels: count === this.batchRows ? this.labels : this.labels.slice(0, count),
      keys: this.keys,
    };
    // The yielded batch belongs to the caller: fresh buffers for the next one.
    this.features = new Float32Array(this.batchRows * this.dim);
    this.labels = new Int32Array(this.batchRows);
    this.keys = [];
    return batch;
  }
}

/**
 * The live rows of `split`, shuffled: parts in a seeded random order, each row entering a buffer of `bufferRows`
 * from which a uniformly drawn row leaves when it is full. Yields every kept live row exactly once.
 */
export async function* streamRows(
  cache: FeatureCache,
  split: string,
  options: StreamOptions,
): AsyncGenerator<RowBatch> {
  const { dim } = cache;
  const bufferRows = Math.max(1, Math.floor(options.bufferRows));
  const batchRows = Math.max(1, Math.floor(options.batchRows));
  const random = seededRandom(options.seed);
  const latest = options.latest ?? (await cache.latest(split));
  const parts = await cache.partFiles(split);
  const order = Array.from(shuffled(parts.length, random));
  const buffer = new Float32Array(bufferRows * dim);
  const bufferLabels = new Int32Array(bufferRows);
  const bufferKeys: string[] = [];
  const out = new BatchCollector(dim, batchRows);
  for await (const part of cache.batches(split, latest, order)) {
    for (let r = 0; r < part.count; r++) {
      const key = part.paths[r]!;
      const label = part.labels[r]!;
      if (options.keep && !options.keep(key, label)) continue;
      const row = part.features.subarray(r * dim, (r + 1) * dim);
      if (bufferKeys.length < bufferRows) {
        buffer.set(row, bufferKeys.length * dim);
        bufferLabels[bufferKeys.length] = label;
        bufferKeys.push(key);
        continue;
      }
      // Full: a uniformly drawn row leaves and the new one takes its slot.
      const j = Math.floor(random() * bufferRows);
      out.push(buffer.subarray(j * dim, (j + 1) * dim), bufferLabels[j]!, bufferKeys[j]!);
      buffer.set(row, j * dim);
      bufferLabels[j] = label;
      bufferKeys[j] = key;
      if (out.full) yield out.take()!;
    }
  }
  // Drain what is left in a random order.
  const rest = shuffled(bufferKeys.length, random);
  for (const j of rest) {
    out.push(buffer.subarray(j * dim, (j + 1) * dim), bufferLabels[j]!, bufferKeys[j]!);
    if (out.full) yield out.take()!;
  }
  const last = out.take();
  if (last) yield last;
}

/** What loading a split whole (`FeatureCache.read`) costs, known from the part indexes before anything is read. */
export interface FeatureSetCost {
  split: string;
  rows: number;
  dim: number;
  /** The matrix itself: rows × dim × 4. */
  featureBytes: number;
  /** `read` holds every part's rows and the sorted copy at once: about twice the matrix, plus the paths. */
  peakBytes: number;
  /** One line for the log. */
  text: string;
}

/** Bytes per path string in V8 (header + one byte per ASCII character, rounded up) and its array slot. */
const PATH_BYTES = 96;

export async function featureSetCost(cache: FeatureCache, split: string): Promise<FeatureSetCost> {
  const latest = await cache.latest(split);
  const rows = FeatureCache.liveRows(latest);
  const featureBytes = rows * cache.dim * 4;
  const peakBytes = 2 * featureBytes + rows * PATH_BYTES;
  return {
    split,
    rows,
    dim: cache.dim,
    featureBytes,
    peakBytes,
    text: `loading split ${split} whole: ${rows} rows × ${cache.dim} = ${mib(featureBytes)} of features, about ${mib(peakBytes)} while it loads`,
  };
}

export function mib(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${Math.round(bytes / 2 ** 20)} MiB`;
}
