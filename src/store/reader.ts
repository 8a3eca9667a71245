/**
 * The typed reader every later stage uses. A split is the union of its part files, merged so that the newest
 * record of a path wins (a re-extracted image replaces its old row; a removal hides it), which is what makes
 * append-only writes, resumption and shards add up to one consistent view.
 */
import { splitAlias } from '../util/split-names.js';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, damagedFile, missingFile, optionName } from '../errors.js';
import { type CacheManifest, readManifest } from './manifest.js';
import { type Failure, type PartContent, readPartIndex } from './part.js';
import { DAMAGED_PART_REMEDY, missingParts, readVerifiedPart } from './verify.js';

export { DAMAGED_PART_REMEDY };

export const PART_PATTERN = /^part-.*\.arrow$/;

export interface FeatureSet {
  split: string;
  count: number;
  dim: number;
  /** count × dim, row-major. */
  features: Float32Array;
  /** Class index per row, -1 for unlabelled rows. */
  labels: Int32Array;
  paths: string[];
  classes: string[];
}

export interface LatestRecord {
  kind: 'row' | 'failure' | 'removed';
  part: number;
  size: number;
  mtimeMs: number;
  failure?: Failure;
}

export class FeatureCache {
  private constructor(
    readonly dir: string,
    readonly manifest: CacheManifest,
  ) {}

  static async open(dir: string): Promise<FeatureCache> {
    const manifest = await readManifest(dir);
    if (!manifest)
      throw missingFile('cache', dir, `run extract with this cache first`, 'no feature cache here (no cache.json)');
    return new FeatureCache(dir, manifest);
  }

  get dim(): number {
    return this.manifest.dim;
  }

  async splits(): Promise<string[]> {
    const entries = await fs.readdir(this.dir, { withFileTypes: true }).catch(() => []);
    const splits: string[] = [];
    for (const entry of entries) {
      if (entry.isDirectory() && (await this.partFiles(entry.name)).length > 0) splits.push(entry.name);
    }
    return splits.sort();
  }

  /**
   * The cached split a name means: itself, or the one cached member of its family (`train` finds `training`, `val`
   * finds `validation`: util/split-names.ts). Jobs resolve their split names once, on opening the cache.
   */
  async resolveSplit(split: string): Promise<string> {
    return splitAlias(split, await this.splits());
  }

  /** Part files of a split in commit order (their names start with a run timestamp). */
  async partFiles(split: string): Promise<string[]> {
    const names = await fs.readdir(path.join(this.dir, split)).catch(() => [] as string[]);
    return names
      .filter((n) => PART_PATTERN.test(n))
      .sort()
      .map((n) => path.join(this.dir, split, n));
  }

  private async requireSplit(split: string): Promise<string[]> {
    const parts = await this.partFiles(split);
    if (parts.length === 0) {
      const available = await this.splits();
      throw new FeatcacheError(
        `${optionName('split')} ${split}: not in cache ${this.dir}; ${available.length > 0 ? `available: ${available.join(', ')}` : 'the cache is empty — run extract first'}`,
      );
    }
    return parts;
  }

  /** A part's content, verified against its index (see verify.ts): the only way rows leave the cache. */
  async readPart(file: string): Promise<PartContent> {
    const part = await readVerifiedPart(file);
    this.checkDim(file, part.meta.dim);
    return part;
  }

  /**
   * Refuses a split one of whose parts is gone while its index remains: reading the others would silently give
   * fewer rows than the cache holds.
   */
  async requireNoMissingParts(split: string): Promise<void> {
    const missing = await missingParts(path.join(this.dir, split));
    if (missing.length > 0)
      throw damagedFile(
        missing[0]!,
        `damaged split ${split}: the part is missing but its index lists its rows${missing.length > 1 ? ` (and ${missing.length - 1} more missing parts)` : ''}`,
        DAMAGED_PART_REMEDY,
      );
  }

  private checkDim(file: string, dim: number): void {
    if (dim !== this.dim) {
      throw damagedFile(
        file,
        `features are ${dim}-d but the cache's are ${this.dim}-d`,
        'the part does not belong to this cache',
      );
    }
  }

  /**
   * The newest record of every path in a split: the state that incremental extraction compares against. Built from
   * the parts' small index files, so planning a run over millions of cached rows does not read their features.
   */
  async latest(split: string): Promise<Map<string, LatestRecord>> {
    const latest = new Map<string, LatestRecord>();
    const parts = await this.partFiles(split);
    for (const [index, file] of parts.entries()) {
      const part = await readPartIndex(file).catch((error: Error) => {
        throw damagedFile(file, `unreadable part file (${error.message})`, DAMAGED_PART_REMEDY);
      });
      this.checkDim(file, part.dim);
      for (const p of part.removed) latest.set(p, { kind: 'removed', part: index, size: 0, mtimeMs: 0 });
      for (const f of part.failures)
        latest.set(f.path, { kind: 'failure', part: index, size: f.size, mtimeMs: f.mtimeMs, failure: f });
      for (const r of part.rows) latest.set(r.path, { kind: 'row', part: index, size: r.size, mtimeMs: r.mtimeMs });
    }
    return latest;
  }

  /**
   * Streams a split's live rows part by part, so memory stays bounded by one part whatever the split's size.
   * Rows are in commit order; `partOrder` (indices into `partFiles`) reads only those parts, in that order.
   */
  async *batches(
    split: string,
    latestRecords?: Map<string, LatestRecord>,
    partOrder?: readonly number[],
  ): AsyncGenerator<FeatureSet> {
    const parts = await this.requireSplit(split);
    await this.requireNoMissingParts(split);
    const latest = latestRecords ?? (await this.latest(split));
    for (const index of partOrder ?? parts.keys()) {
      const file = parts[index]!;
      const part = await this.readPart(file);
      const keep = part.rows
        .map((r, i) => (latest.get(r.path)?.kind === 'row' && latest.get(r.path)?.part === index ? i : -1))
        .filter((i) => i >= 0);
      if (keep.length === 0) continue;
      const features = new Float32Array(keep.length * this.dim);
      keep.forEach((rowIndex, k) =>
        features.set(part.features.subarray(rowIndex * this.dim, (rowIndex + 1) * this.dim), k * this.dim),
      );
      yield {
        split,
        count: keep.length,
        dim: this.dim,
        features,
        labels: Int32Array.from(keep, (i) => part.rows[i]!.label ?? -1),
        paths: keep.map((i) => part.rows[i]!.path),
        classes: this.manifest.classes,
      };
    }
  }

  /** The whole split in memory, sorted by path so results do not depend on extraction order or sharding. */
  async read(split: string): Promise<FeatureSet> {
    const chunks: FeatureSet[] = [];
    for await (const batch of this.batches(split)) chunks.push(batch);
    const rows = chunks.flatMap((c) => c.paths.map((p, i) => ({ p, c, i })));
    rows.sort((a, b) => (a.p < b.p ? -1 : a.p > b.p ? 1 : 0));
    const features = new Float32Array(rows.length * this.dim);
    rows.forEach((r, k) => features.set(r.c.features.subarray(r.i * this.dim, (r.i + 1) * this.dim), k * this.dim));
    return {
      split,
      count: rows.length,
      dim: this.dim,
      features,
      labels: Int32Array.from(rows, (r) => r.c.labels[r.i]!),
      paths: rows.map((r) => r.p),
      classes: this.manifest.classes,
    };
  }

  /** Number of rows `batches` will yield, from the index `latest` returns (one pass over the parts' paths). */
  static liveRows(latest: Map<string, LatestRecord>): number {
    let rows = 0;
    for (const record of latest.values()) if (record.kind === 'row') rows++;
    return rows;
  }

  /** Images of a split whose newest record is a failure: the failure ledger. */
  async failures(split: string): Promise<Failure[]> {
    const latest = await this.latest(split);
    return [...latest.values()]
      .flatMap((r) => (r.kind === 'failure' && r.failure ? [r.failure] : []))
      .sort((a, b) => (a.path < b.path ? -1 : 1));
  }
}
