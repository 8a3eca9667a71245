/** The info job: what a cache holds — provenance, splits and row counts, and the failure ledger. */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatureCache } from '../store/reader.js';
import { withDefaults } from '../util/options.js';
import { DAMAGED_SUFFIX, missingParts, partProblem } from '../store/verify.js';
import type { CacheManifest } from '../store/manifest.js';
import type { Failure } from '../store/part.js';
import { DEFAULT_INFO_OPTIONS } from './defaults.js';

export { DEFAULT_INFO_OPTIONS };

export interface InfoOptions {
  /** Feature cache directory. */
  cache: string;
  /** Verify every part against the length and sha256 recorded at its commit (reads all features). */
  check: boolean;
}

export interface PartDamage {
  file: string;
  problem: string;
}

export interface SplitInfo {
  split: string;
  rows: number;
  parts: number;
  failures: Failure[];
  /** Parts whose file is gone while their index remains; with `check`, also parts that do not match their index. */
  damaged: PartDamage[];
  /** Parts set aside as damaged by an earlier extract (kept for inspection; safe to delete). */
  setAside: string[];
}

export interface CacheInfo {
  cache: string;
  manifest: CacheManifest;
  splits: SplitInfo[];
  /** false when damage was found; true when every part was verified and none is damaged; otherwise null. */
  healthy: boolean | null;
}

/**
 * Describes a feature cache. Row counts come from the parts' index files, so this is cheap on large caches;
 * `check` also verifies every part's bytes.
 *
 * @example
 * const { manifest, splits } = await info({ cache: 'features' });
 * for (const s of splits) console.log(s.split, s.rows, s.failures.length);
 */
export async function info(options: Partial<InfoOptions> = {}): Promise<CacheInfo> {
  const o = withDefaults(DEFAULT_INFO_OPTIONS, options);
  const cache = await FeatureCache.open(o.cache);
  const splits: SplitInfo[] = [];
  for (const split of await cache.splits()) {
    const latest = await cache.latest(split);
    const parts = await cache.partFiles(split);
    splits.push({
      split,
      rows: FeatureCache.liveRows(latest),
      parts: parts.length,
      failures: await cache.failures(split),
      damaged: [...(await missingPartDamage(path.join(o.cache, split))), ...(o.check ? await damagedParts(parts) : [])],
      setAside: await setAsideParts(path.join(o.cache, split)),
    });
  }
  return {
    cache: o.cache,
    manifest: cache.manifest,
    splits,
    // Damage found is reported whether or not every part was verified.
    healthy: splits.some((s) => s.damaged.length > 0) ? false : o.check ? true : null,
  };
}

/** Parts whose index remains but whose file is gone: found from the listing alone, so even without `check`. */
async function missingPartDamage(dir: string): Promise<PartDamage[]> {
  return (await missingParts(dir)).map((file) => ({ file, problem: 'missing (its index lists its rows)' }));
}

async function damagedParts(parts: string[]): Promise<PartDamage[]> {
  const damaged: PartDamage[] = [];
  for (const file of parts) {
    const problem = await partProblem(file);
    if (problem) damaged.push({ file, problem });
  }
  return damaged;
}

async function setAsideParts(dir: string): Promise<string[]> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  return names.filter((n) => n.endsWith(`.arrow${DAMAGED_SUFFIX}`)).map((n) => path.join(dir, n));
}
