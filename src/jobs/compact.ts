/**
 * The compact job: takes a split's locks and rewrites its parts without superseded records (src/store/compact.ts),
 * so tools that read features/<split>/*.arrow directly see each image once, with its newest features.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { invalidParameter } from '../errors.js';
import { type CompactionStats, compactParts } from '../store/compact.js';
import { type Lock, acquireLock } from '../store/lock.js';
import { FeatureCache } from '../store/reader.js';
import { withDefaults } from '../util/options.js';
import { DEFAULT_COMPACT_OPTIONS } from './defaults.js';

export { DEFAULT_COMPACT_OPTIONS };

export interface CompactOptions {
  /** Feature cache directory. */
  cache: string;
  /** Split to compact. */
  split: string;
  /** Rows per rewritten part file (Arrow JS reads a part whole, so this bounds a reader's memory). */
  partRows: number;
  log: (line: string) => void;
}

export interface CompactResult extends CompactionStats {
  split: string;
  seconds: number;
}

/** Shard labels of extract runs that wrote parts here (`part-<time>-<shard>-<pid>-<seq>…`) or hold a lock now. */
async function shardsOf(splitDir: string): Promise<string[]> {
  const shards = new Set<string>();
  for (const name of await fs.readdir(splitDir).catch(() => [] as string[])) {
    const shard = /^part-\d+-(\d+of\d+)-\d+-/.exec(name)?.[1] ?? /^\.lock-(.+)$/.exec(name)?.[1];
    if (shard && shard !== 'compact') shards.add(shard);
  }
  return [...shards].sort();
}

/**
 * Compacts one split of a cache under its locks: every extract shard's lock (so no run of a known shard writes
 * meanwhile) and a compaction lock. A part written by a run that starts later sorts after the compacted parts, so
 * it stays the newest record of its paths.
 *
 * @example
 * ```ts
 * import { compactSplit } from 'featcache';
 * const r = await compactSplit({ cache: './features', split: 'train' });
 * console.log(`${r.partsBefore} parts → ${r.partsAfter}, ${r.rows} rows`);
 * ```
 */
export async function compactSplit(given: Partial<CompactOptions>): Promise<CompactResult> {
  const options: CompactOptions = withDefaults(DEFAULT_COMPACT_OPTIONS, given);
  if (!Number.isInteger(options.partRows) || options.partRows < 1)
    throw invalidParameter('partRows', 'a positive integer', options.partRows);
  const started = performance.now();
  const cache = await FeatureCache.open(options.cache);
  const available = await cache.splits();
  if (!available.includes(options.split)) {
    throw invalidParameter(
      'split',
      `a split of ${options.cache} (${available.length > 0 ? `available: ${available.join(', ')}` : 'the cache is empty'})`,
      options.split,
    );
  }
  const splitDir = path.join(options.cache, options.split);
  const locks: Lock[] = [];
  try {
    locks.push(
      await acquireLock(
        path.join(splitDir, '.lock-compact'),
        `--cache ${options.cache} split ${options.split} (compaction)`,
      ),
    );
    for (const shard of await shardsOf(splitDir)) {
      locks.push(
        await acquireLock(
          path.join(splitDir, `.lock-${shard}`),
          `--cache ${options.cache} split ${options.split} shard ${shard}`,
        ),
      );
    }
    const stats = await compactParts(cache, options.split, { partRows: options.partRows, log: options.log });
    return { split: options.split, ...stats, seconds: (performance.now() - started) / 1000 };
  } finally {
    for (const lock of locks.reverse()) await lock.release();
  }
}
