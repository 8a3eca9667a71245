/**
 * Writing one split (and shard) of a cache: the rules that make a killed run resume exactly once. One writer holds
 * the split's lock; rows go into atomic part files of at most `partRows` rows (and MAX_PART_BYTES), named by a
 * run id that sorts by time, so the reader's "newest record wins" sees them in commit order; removals are committed
 * only once a whole dataset has been seen.
 */
import * as path from 'node:path';
import * as fs from 'node:fs/promises';
import type { Item } from '../dataset/source.js';
import type { Stamp } from '../dataset/source.js';
import type { Shard } from '../dataset/split.js';
import { inShard } from '../dataset/split.js';
import { FeatcacheError, optionName, ExitCode } from '../errors.js';
import { type Lock, acquireLock, removeStaleTemporaries } from './lock.js';
import { type Failure, type Row, writePart } from './part.js';
import { FeatureCache, type LatestRecord } from './reader.js';
import { partProblem, setAside } from './verify.js';

/** Parts stay far below Arrow JS's 2 GiB limits whatever partRows says (e.g. when tapping an unpooled tensor). */
export const MAX_PART_BYTES = 512 * 1024 * 1024;

export interface SplitWriterOptions {
  cache: string;
  split: string;
  shard?: Shard | undefined;
  dim: number;
  /** Rows per committed part: the most work a kill can lose. */
  partRows: number;
  /** Stored in every part's metadata. */
  provenance: Record<string, unknown>;
  /** Notes for the user (damaged parts set aside). */
  log?: ((line: string) => void) | undefined;
}

export interface WorkPlan {
  /** New items, items whose stamp changed, and (when retrying) past failures. */
  todo: Item[];
  unchanged: number;
  /** Cached paths of this shard that the dataset no longer has. */
  removed: string[];
}

export const shardLabel = (shard: Shard | undefined): string => (shard ? `${shard.index}of${shard.count}` : '0of1');

export class SplitWriter {
  private pending: { rows: Row[]; features: Float32Array[]; failures: Failure[] } = {
    rows: [],
    features: [],
    failures: [],
  };
  private sequence = 0;
  /** Seconds spent committing parts. */
  writeS = 0;

  private constructor(
    private readonly options: SplitWriterOptions,
    private readonly dir: string,
    private readonly lock: Lock,
    private readonly runId: string,
    readonly latest: Map<string, LatestRecord>,
    readonly partRows: number,
  ) {}

  /** Takes the split's lock, clears what a killed writer left, and reads what the split already holds. */
  static async open(options: SplitWriterOptions): Promise<SplitWriter> {
    const dir = path.join(options.cache, options.split);
    await fs.mkdir(dir, { recursive: true });
    const shard = shardLabel(options.shard);
    const lock = await acquireLock(
      path.join(dir, `.lock-${shard}`),
      `${optionName('cache')} ${options.cache} split ${options.split} shard ${shard}`,
    );
    try {
      await removeStaleTemporaries(dir, shard);
      const cache = await FeatureCache.open(options.cache);
      await setAsideDamagedParts(await cache.partFiles(options.split), options.log ?? (() => {}));
      const latest = await cache.latest(options.split);
      const runId = `${String(Date.now()).padStart(15, '0')}-${shard}-${process.pid}`;
      const partRows = Math.max(1, Math.min(options.partRows, Math.floor(MAX_PART_BYTES / (options.dim * 4))));
      return new SplitWriter(options, dir, lock, runId, latest, partRows);
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  /** What to (re)extract: new items, items whose size or mtime changed, and (with retryFailed) past failures. */
  async plan(items: Item[], stamp: (item: Item) => Promise<Stamp | null>, retryFailed: boolean): Promise<WorkPlan> {
    const todo: Item[] = [];
    let unchanged = 0;
    for (const item of items) {
      if (isCurrent(this.latest.get(item.path), await this.stampIfCached(item, stamp), retryFailed)) unchanged++;
      else todo.push(item);
    }
    const present = new Set(items.map((i) => i.path));
    const shard = this.options.shard;
    const removed = [...this.latest.entries()]
      .filter(([p, r]) => r.kind !== 'removed' && !present.has(p) && (!shard || inShard(shard, p)))
      .map(([p]) => p);
    return { todo, unchanged, removed };
  }

  private async stampIfCached(item: Item, stamp: (item: Item) => Promise<Stamp | null>): Promise<Stamp | null> {
    return this.latest.has(item.path) ? stamp(item) : null;
  }

  /** Adds a batch's outcomes; commits a part whenever partRows are pending. */
  async add(rows: Row[], features: Float32Array, failures: Failure[]): Promise<void> {
    if (rows.length > 0) {
      this.pending.rows.push(...rows);
      this.pending.features.push(features);
    }
    this.pending.failures.push(...failures);
    if (this.pending.rows.length + this.pending.failures.length >= this.partRows) await this.commit([]);
  }

  /** Commits what is pending, with the removals of a run that saw the whole dataset. */
  async finish(removed: string[]): Promise<void> {
    await this.commit(removed);
  }

  async close(): Promise<void> {
    await this.lock.release();
  }

  private async commit(removed: string[]): Promise<void> {
    const { rows, features, failures } = this.pending;
    if (rows.length === 0 && failures.length === 0 && removed.length === 0) return;
    const started = performance.now();
    const file = path.join(this.dir, `part-${this.runId}-${String(this.sequence++).padStart(6, '0')}.arrow`);
    const { split, dim, provenance } = this.options;
    await writePart(file, {
      meta: { split, shard: shardLabel(this.options.shard), runId: this.runId, dim, failures, removed, provenance },
      rows,
      features: concatenate(features, rows.length * dim),
    }).catch((error: NodeJS.ErrnoException) => {
      throw new FeatcacheError(
        `${optionName('cache')} ${this.options.cache}: cannot write ${file} (${error.code ?? error.message}); parts already written are intact — free space and re-run to resume`,
        ExitCode.failed,
      );
    });
    this.pending = { rows: [], features: [], failures: [] };
    this.writeS += (performance.now() - started) / 1000;
  }
}

/**
 * A part damaged after its commit would otherwise make its rows look cached ("unchanged") while no reader can read
 * them: set it aside, so its rows are extracted again.
 */
async function setAsideDamagedParts(parts: string[], log: (line: string) => void): Promise<void> {
  for (const file of parts) {
    const problem = await partProblem(file);
    if (problem)
      log(
        `extract: ${file} is damaged (${problem}); set aside as ${path.basename(await setAside(file))}, its rows are extracted again`,
      );
  }
}

/** A cached record is current when it is a row (or a failure not being retried) read at the same size and mtime. */
function isCurrent(record: LatestRecord | undefined, stamp: Stamp | null, retryFailed: boolean): boolean {
  if (!record || record.kind === 'removed' || (record.kind === 'failure' && retryFailed) || !stamp) return false;
  return stamp.size === record.size && stamp.mtimeMs === record.mtimeMs;
}

function concatenate(chunks: Float32Array[], length: number): Float32Array {
  const out = new Float32Array(length);
  chunks.reduce((offset, chunk) => (out.set(chunk, offset), offset + chunk.length), 0);
  return out;
}
