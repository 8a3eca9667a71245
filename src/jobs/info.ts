/** The info job: what a cache holds — provenance, splits and row counts, and the failure ledger. */
import { FeatureCache } from '../store/reader.js';
import type { CacheManifest } from '../store/manifest.js';
import type { Failure } from '../store/part.js';

export interface InfoOptions {
  /** Feature cache directory. */
  cache: string;
}

export const DEFAULT_INFO_OPTIONS: Readonly<InfoOptions> = Object.freeze({ cache: './features' });

export interface SplitInfo {
  split: string;
  rows: number;
  parts: number;
  failures: Failure[];
}

export interface CacheInfo {
  cache: string;
  manifest: CacheManifest;
  splits: SplitInfo[];
}

/**
 * Describes a feature cache. Row counts come from the parts' index files, so this is cheap on large caches.
 *
 * @example
 * const { manifest, splits } = await info({ cache: 'features' });
 * for (const s of splits) console.log(s.split, s.rows, s.failures.length);
 */
export async function info(options: Partial<InfoOptions> = {}): Promise<CacheInfo> {
  const o = { ...DEFAULT_INFO_OPTIONS, ...options };
  const cache = await FeatureCache.open(o.cache);
  const splits: SplitInfo[] = [];
  for (const split of await cache.splits()) {
    const latest = await cache.latest(split);
    splits.push({ split, rows: FeatureCache.liveRows(latest), parts: (await cache.partFiles(split)).length, failures: await cache.failures(split) });
  }
  return { cache: o.cache, manifest: cache.manifest, splits };
}
