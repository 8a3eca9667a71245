/**
 * Cached splits as kNN inputs: rows loaded through the store's reader, each tagged with the part that holds its live
 * record (what a persisted index keys on), and the cache's feature identity checked part by part, because rows from
 * two backbones (or fp32 beside int8) are not comparable and their distances would mean nothing.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { RecordBatchFileReader } from 'apache-arrow';
import { damagedFile } from '../errors.js';
import { type CacheManifest, type FeatureIdentity, identityDifferences } from '../store/manifest.js';
import { type PartMeta, readRecordedIndex } from '../store/part.js';
import { PART_META_KEY } from '../store/part-arrow.js';
import { FeatureCache, type LatestRecord } from '../store/reader.js';

export interface SplitRows {
  split: string;
  count: number;
  dim: number;
  /** count × dim, row-major, rows sorted by path. */
  features: Float32Array;
  paths: string[];
  labels: Int32Array;
  classes: string[];
  /** File name of the part holding each row's live record. */
  parts: string[];
}

/** A part as an index records it: its name and, when the part has one, the sha256 committed with it. */
export interface PartStamp {
  name: string;
  sha256: string | null;
  bytes: number | null;
}

/** What an index must agree with to be reused: the features' identity. */
export interface IndexIdentity {
  modelSha256: string;
  tappedTensor: string;
  preset: Record<string, unknown>;
  precision: string;
  calibrationHash: string | null;
  dim: number;
}

export function identityOf(manifest: CacheManifest): IndexIdentity {
  return {
    modelSha256: manifest.modelSha256,
    tappedTensor: manifest.tappedTensor,
    preset: manifest.preset,
    precision: manifest.precision ?? 'fp32',
    calibrationHash: manifest.calibrationHash ?? null,
    dim: manifest.dim,
  };
}

export async function partStamps(cache: FeatureCache, split: string): Promise<PartStamp[]> {
  const stamps: PartStamp[] = [];
  for (const file of await cache.partFiles(split)) {
    const recorded = await readRecordedIndex(file);
    stamps.push({ name: path.basename(file), sha256: recorded?.sha256 ?? null, bytes: recorded?.bytes ?? null });
  }
  return stamps;
}

/** The provenance a part was committed with (its schema metadata), read without decoding its rows. */
async function partProvenance(file: string): Promise<Record<string, unknown>> {
  const reader = RecordBatchFileReader.from(await fs.readFile(file)).open();
  const text = reader.schema.metadata.get(PART_META_KEY);
  reader.cancel();
  return text ? (JSON.parse(text) as PartMeta).provenance : {};
}

/**
 * Refuses a split whose parts were computed with another model, tap, preset or precision than the cache's manifest:
 * a part copied in from another cache, or left from before the manifest changed. Parts that record no identity
 * (compacted ones, which only copy checked rows) are taken as the manifest's.
 */
export async function requireOneIdentity(cache: FeatureCache, split: string): Promise<void> {
  for (const file of await cache.partFiles(split)) {
    // An unreadable part is the reader's to report, with its remedy, when the rows are loaded.
    const provenance: Record<string, unknown> = await partProvenance(file).catch(() => ({}));
    if (typeof provenance.modelSha256 !== 'string') continue;
    const diffs = identityDifferences(cache.manifest, provenance as unknown as FeatureIdentity);
    if (diffs.length > 0)
      throw damagedFile(
        file,
        `features computed differently from the rest of cache ${cache.dir} (${diffs.join('; ')})`,
        'distances between them mean nothing — move the part to a cache of its own, or re-extract this split into a new cache',
      );
  }
}

/** A split's live rows, sorted by path, with the part of each; the split's identity checked first. */
export async function loadSplit(cache: FeatureCache, split: string): Promise<SplitRows> {
  await requireOneIdentity(cache, split);
  const latest: Map<string, LatestRecord> = await cache.latest(split);
  const names = (await cache.partFiles(split)).map((f) => path.basename(f));
  const set = await cache.read(split);
  return {
    split,
    count: set.count,
    dim: set.dim,
    features: set.features,
    paths: set.paths,
    labels: set.labels,
    classes: set.classes,
    parts: set.paths.map((p) => names[latest.get(p)!.part]!),
  };
}

/**
 * The image file each row was read from: the data root its part recorded at extract + the cached path. null where
 * the part records no root (parts compacted before roots were kept, or written by other tools) or the path is a URL.
 * Only the parts' schema metadata is read: unlike duplicates' rowSources, nothing is hashed and nothing is written
 * into the cache.
 */
export async function rowImageFiles(
  cache: FeatureCache,
  rows: Pick<SplitRows, 'split' | 'paths' | 'parts'>,
): Promise<(string | null)[]> {
  const roots = new Map<string, string | null>();
  for (const file of await cache.partFiles(rows.split)) {
    const provenance: Record<string, unknown> = await partProvenance(file).catch(() => ({}));
    roots.set(path.basename(file), typeof provenance.dataRoot === 'string' ? provenance.dataRoot : null);
  }
  return rows.paths.map((p, i) => {
    const root = roots.get(rows.parts[i]!) ?? null;
    return root === null || /^[a-z][a-z0-9+.-]*:\/\//i.test(p) ? null : path.resolve(root, p);
  });
}

/** Several splits as one set of rows (for duplicates across splits); `origin[i]` is row i's split. */
export function concatSplits(sets: SplitRows[]): SplitRows & { origin: string[] } {
  const dim = sets[0]?.dim ?? 0;
  const count = sets.reduce((n, s) => n + s.count, 0);
  const features = new Float32Array(count * dim);
  let offset = 0;
  for (const s of sets) {
    features.set(s.features.subarray(0, s.count * dim), offset);
    offset += s.count * dim;
  }
  return {
    split: sets.map((s) => s.split).join('+'),
    count,
    dim,
    features,
    paths: sets.flatMap((s) => s.paths),
    labels: Int32Array.from(sets.flatMap((s) => [...s.labels])),
    classes: sets[0]?.classes ?? [],
    parts: sets.flatMap((s) => s.parts),
    origin: sets.flatMap((s) => s.paths.map(() => s.split)),
  };
}
