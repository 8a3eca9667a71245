/**
 * The reference behind serve's POST /similar: one cached split opened as a `SplitSearcher` for the server's life, and
 * a micro-batcher in front of it, so concurrent queries share one blocked matrix product (or one HNSW pass) instead
 * of each scanning the split alone. Queries are embedded by the served model's own session; the cache must hold
 * features of that same backbone, tap, preset and precision, or distances would compare unlike things.
 */
import { FeatcacheError, ExitCode, optionName } from '../errors.js';
import { SplitSearcher } from '../neighbors/search.js';
import { type FeatureIdentity, identityDifferences } from '../store/manifest.js';
import { FeatureCache } from '../store/reader.js';
import { type Batched, MicroBatcher } from './batcher.js';
import type { ServedModel } from './model.js';

export interface SimilarNeighbour {
  rank: number;
  /** The row's path as stored in the split. */
  path: string;
  label: string | null;
  /** Cosine similarity (1 − distance). */
  similarity: number;
  /** Cosine distance, as the neighbours engine reports it. */
  distance: number;
}

export interface SimilarReference {
  cache: string;
  split: string;
  rows: number;
  dim: number;
  method: 'exact' | 'hnsw';
  /** The k nearest rows to one image's features, best first (fewer when the split has fewer rows). */
  search(features: Float32Array, k: number): Promise<Batched<SimilarNeighbour[]>>;
  /** Finishes queued searches, then releases the searcher. */
  close(): Promise<void>;
}

interface Query {
  features: Float32Array;
  k: number;
}

const sortedKeys = (o: Record<string, unknown>) =>
  Object.fromEntries(
    Object.keys(o)
      .sort()
      .map((k) => [k, o[k]]),
  );

/** Why the served model's features cannot be compared with the cache's, or nothing when they can. */
export function referenceMismatch(cache: FeatureCache, model: ServedModel): string[] {
  const m = cache.manifest;
  const b = model.provenance.backbone;
  const served: FeatureIdentity = {
    modelSha256: b.sha256,
    tappedTensor: b.tappedTensor,
    preset: sortedKeys(model.preprocessing.preset as unknown as Record<string, unknown>),
    exif: model.preprocessing.policy.exif,
    icc: model.preprocessing.policy.icc,
    precision: b.precision,
  };
  const diffs = identityDifferences({ ...m, preset: sortedKeys(m.preset) }, served);
  if (diffs.length === 0 && model.featureDim !== m.dim)
    diffs.push(`features ${m.dim}-d in the cache vs ${model.featureDim}-d from the served model`);
  return diffs;
}

/** Refuses a cache directory or split that is not there, before the server starts anything. */
export async function checkReferenceSplit(cacheDir: string, split: string): Promise<void> {
  const cache = await FeatureCache.open(cacheDir);
  const splits = await cache.splits();
  if (!splits.includes(await cache.resolveSplit(split)))
    throw new FeatcacheError(
      `${optionName('similarSplit')}: the cache ${cacheDir} has no split ${JSON.stringify(split)} (it has: ${splits.join(', ') || 'none'})`,
    );
}

export interface ReferenceOptions {
  maxBatch: number;
  maxQueue: number;
  timeoutMs: number;
  log?: ((line: string) => void) | undefined;
}

/** Opens `split` of the cache as /similar's reference for `model`; refused when their features differ. */
export async function openReference(
  cacheDir: string,
  split: string,
  model: ServedModel,
  options: ReferenceOptions,
): Promise<SimilarReference> {
  const cache = await FeatureCache.open(cacheDir);
  const diffs = referenceMismatch(cache, model);
  if (diffs.length > 0)
    throw new FeatcacheError(
      `${optionName('cache')} ${cacheDir}: holds features of another backbone or preprocessing than the served model (${diffs.join('; ')}); /similar needs a cache extracted with the served backbone, tap and preset`,
      ExitCode.usage,
    );
  const searcher = await SplitSearcher.open(cacheDir, split, { log: options.log });
  const rows = searcher.rows;
  const labelOf = (row: number) => (rows.labels[row]! >= 0 ? (rows.classes[rows.labels[row]!] ?? null) : null);
  const batcher = new MicroBatcher<Query, SimilarNeighbour[]>(
    async (queries) => {
      const k = Math.max(...queries.map((q) => q.k));
      const features = new Float32Array(queries.length * rows.dim);
      queries.forEach((q, i) => features.set(q.features, i * rows.dim));
      const found = await searcher.search(features, queries.length, k);
      return queries.map((q, i) => {
        const neighbours: SimilarNeighbour[] = [];
        for (let j = 0; j < q.k; j++) {
          const row = found.indices[i * k + j]!;
          if (row < 0) break;
          const distance = found.distances[i * k + j]!;
          neighbours.push({
            rank: j + 1,
            path: rows.paths[row]!,
            label: labelOf(row),
            similarity: 1 - distance,
            distance,
          });
        }
        return neighbours;
      });
    },
    // No waiting for company: under load, queries pile up while a search runs and the next batch takes them all.
    { maxBatch: options.maxBatch, maxWaitMs: 0, maxQueue: options.maxQueue, timeoutMs: options.timeoutMs },
  );
  return {
    cache: cacheDir,
    split,
    rows: rows.count,
    dim: rows.dim,
    method: searcher.method,
    search: (features, k) =>
      rows.count === 0
        ? Promise.resolve({ output: [], batchSize: 0, waitMs: 0, runMs: 0 })
        : batcher.submit({ features, k: Math.min(k, rows.count) }),
    async close() {
      await batcher.drain();
      await searcher.close();
    },
  };
}
