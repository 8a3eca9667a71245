/**
 * The map's 2-D layout: UMAP (./umap.ts) over the neighbours engine's cached kNN graph, itself cached beside the
 * split's parts with its provenance and reused while nothing it depends on changed. One split lays out its own
 * cached graph (`knnGraph`, shared with the other stages); several splits lay out the graph of their union, cached
 * the same way beside the first split's parts. Only files named in featcache's own metadata are ever replaced.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, invalidParameter, numberIn, nonNegativeInteger, positiveInteger } from '../errors.js';
import { exactKnn, type Metric, METRICS } from '../neighbors/exact.js';
import { DEFAULT_HNSW_OPTIONS, hnswSelfKnn, INDEX_DIR } from '../neighbors/hnsw.js';
import { DEFAULT_SEARCH_OPTIONS, knnGraph } from '../neighbors/search.js';
import {
  concatSplits,
  identityOf,
  type IndexIdentity,
  type PartStamp,
  partStamps,
  type SplitRows,
} from '../neighbors/split.js';
import type { FeatureCache } from '../store/reader.js';
import { encodePair, readPair, replaceCached, uniqueBinName } from '../util/cached-pair.js';
import { toolVersions } from '../version.js';
import {
  DEFAULT_UMAP_PARAMETERS,
  defaultEpochs,
  type NeighbourGraph,
  umapLayout,
  type UmapParameters,
} from './umap.js';

/** Bumped whenever the layout arithmetic changes, so layouts cached by an older featcache are recomputed. */
export const LAYOUT_ALGORITHM = 'featcache-umap/1';

export interface LayoutOptions {
  /** Neighbours per point in the graph, not counting the point (umap-learn's n_neighbors is k + 1). */
  k: number;
  metric: Metric;
  /** Points from which the union of several splits is searched with HNSW instead of exactly. */
  annThreshold: number;
  umap: UmapParameters;
  log?: ((line: string) => void) | undefined;
  /** Called after each epoch of a layout that is computed (not reused). */
  progress?: ((epoch: number, epochs: number) => void) | undefined;
}

export const DEFAULT_LAYOUT_OPTIONS: Readonly<LayoutOptions> = Object.freeze({
  k: 15,
  metric: 'cosine',
  annThreshold: DEFAULT_SEARCH_OPTIONS.annThreshold,
  umap: DEFAULT_UMAP_PARAMETERS,
});

/** What a cached graph or layout must still agree with to be reused. */
interface Stamps {
  identity: IndexIdentity;
  parts: Record<string, PartStamp[]>;
}

interface UnionGraphMeta extends Stamps {
  format: 1;
  kind: 'map-union-graph';
  splits: string[];
  metric: Metric;
  k: number;
  method: 'exact' | 'hnsw';
  count: number;
  file: string;
  versions: Record<string, string>;
  createdAt: string;
}

export interface LayoutProvenance extends Stamps {
  format: 1;
  kind: 'map-layout';
  algorithm: string;
  splits: string[];
  count: number;
  graph: { k: number; metric: Metric; method: 'exact' | 'hnsw'; file: string };
  /** With `epochs` resolved (0 asks for umap-learn's choice). */
  umap: UmapParameters;
  file: string;
  seconds: number;
  versions: Record<string, string>;
  createdAt: string;
}

export interface Layout {
  x: Float32Array;
  y: Float32Array;
  /** Whether it was read from the cache. */
  cached: boolean;
  /** Seconds this call spent (reading, or computing graph and layout). */
  seconds: number;
  provenance: LayoutProvenance;
}

function checkLayoutOptions(o: LayoutOptions): void {
  positiveInteger('k', o.k);
  if (!METRICS.includes(o.metric)) throw invalidParameter('metric', METRICS.join(' or '), o.metric);
  nonNegativeInteger('epochs', o.umap.epochs);
  numberIn('minDist', o.umap.minDist, 0, o.umap.spread);
  nonNegativeInteger('seed', o.umap.seed);
}

/** Where the map keeps a split set's files: beside the first split's parts, as the neighbours engine does. */
function mapDir(cacheDir: string, splits: string[]): string {
  return path.join(cacheDir, splits[0]!, INDEX_DIR);
}

const setName = (splits: string[]) => splits.join('+');

async function readJson<T>(file: string, kind: string): Promise<T | null> {
  try {
    const value = JSON.parse(await fs.readFile(file, 'utf8')) as { format?: number; kind?: string };
    return value.format === 1 && value.kind === kind ? (value as T) : null;
  } catch {
    return null;
  }
}

const sameStamps = (a: Stamps, b: Stamps) =>
  JSON.stringify(a.identity) === JSON.stringify(b.identity) && JSON.stringify(a.parts) === JSON.stringify(b.parts);

async function stampsOf(cache: FeatureCache, splits: string[]): Promise<Stamps> {
  const parts: Record<string, PartStamp[]> = {};
  for (const split of splits) parts[split] = await partStamps(cache, split);
  return { identity: identityOf(cache.manifest), parts };
}

/**
 * The self-kNN graph over the rows of several splits (`rows`, concatenated in the order of `splits`), cached beside
 * the first split's parts and reused while every split's parts and the cache's identity are unchanged.
 */
export async function unionKnnGraph(
  cache: FeatureCache,
  rows: SplitRows,
  splits: string[],
  options: Pick<LayoutOptions, 'k' | 'metric' | 'annThreshold' | 'log'>,
): Promise<NeighbourGraph & { method: 'exact' | 'hnsw'; cached: boolean; file: string }> {
  const dir = mapDir(cache.dir, splits);
  const metaName = `union-${setName(splits)}-${options.metric}-k${options.k}.json`;
  const stamps = await stampsOf(cache, splits);
  const old = await readJson<UnionGraphMeta>(path.join(dir, metaName), 'map-union-graph');
  const n = rows.count * options.k;
  if (old && sameStamps(old, stamps) && old.count === rows.count) {
    const buffer = await readPair(path.join(dir, old.file), n);
    if (buffer) {
      return {
        count: rows.count,
        k: options.k,
        indices: new Int32Array(buffer, 0, n),
        distances: new Float32Array(buffer, n * 4, n),
        method: old.method,
        cached: true,
        file: path.join(dir, old.file),
      };
    }
  }
  if (old) options.log?.(`map: the kNN graph of ${splits.join(' + ')} is out of date (its parts changed); recomputing`);
  const method = rows.count >= options.annThreshold ? 'hnsw' : 'exact';
  const found =
    method === 'hnsw'
      ? hnswSelfKnn(rows.features, rows.count, rows.dim, options.k, options.metric, DEFAULT_HNSW_OPTIONS)
      : await exactKnn(rows.features, rows.count, rows.features, rows.count, rows.dim, {
          k: options.k,
          metric: options.metric,
          excludeSelf: true,
        });
  const bytes = encodePair(found.indices, found.distances, n);
  const meta: UnionGraphMeta = {
    format: 1,
    kind: 'map-union-graph',
    ...stamps,
    splits,
    metric: options.metric,
    k: options.k,
    method,
    count: rows.count,
    file: uniqueBinName(`union-${setName(splits)}-${options.metric}-k${options.k}`),
    versions: toolVersions(),
    createdAt: new Date().toISOString(),
  };
  await replaceCached(dir, metaName, meta, bytes, old);
  return { count: rows.count, k: options.k, ...found, method, cached: false, file: path.join(dir, meta.file) };
}

/** The graph the layout starts from: the split's own cached graph, or the union's. Rows are `rows`' order. */
async function graphFor(
  cache: FeatureCache,
  rows: SplitRows,
  splits: string[],
  o: LayoutOptions,
): Promise<NeighbourGraph & { method: 'exact' | 'hnsw'; file: string }> {
  if (splits.length > 1) return unionKnnGraph(cache, rows, splits, o);
  const graph = await knnGraph({ cache: cache.dir, split: splits[0]!, k: o.k, metric: o.metric, log: o.log });
  if (graph.paths.length !== rows.count || graph.paths.some((p, i) => p !== rows.paths[i]))
    throw new FeatcacheError(
      `cache ${cache.dir}: split ${splits[0]} changed while the map was being made; run it again`,
      1,
    );
  const file = path.join(cache.dir, splits[0]!, INDEX_DIR, `graph-${o.metric}-k${o.k}.json`);
  return {
    count: rows.count,
    k: graph.k,
    indices: graph.indices,
    distances: graph.distances,
    method: graph.method,
    file,
  };
}

/**
 * The 2-D layout of `loaded` (the splits' rows, in the order of `splits`): read from the cache when its provenance
 * still matches (same parts, identity, graph k and metric, UMAP parameters, seed and algorithm), else computed from
 * the cached kNN graph and cached.
 *
 * @example
 * const layout = await mapLayout(cache, [await loadSplit(cache, 'train')], { umap: { ...DEFAULT_UMAP_PARAMETERS, seed: 1 } });
 */
export async function mapLayout(
  cache: FeatureCache,
  loaded: SplitRows[],
  options: Partial<LayoutOptions> = {},
): Promise<Layout> {
  const o: LayoutOptions = {
    ...DEFAULT_LAYOUT_OPTIONS,
    ...options,
    umap: { ...DEFAULT_UMAP_PARAMETERS, ...options.umap },
  };
  checkLayoutOptions(o);
  const started = performance.now();
  const splits = loaded.map((r) => r.split);
  const rows = loaded.length === 1 ? loaded[0]! : concatSplits(loaded);
  if (rows.count < 2)
    throw new FeatcacheError(
      `${splits.join(' + ')}: ${rows.count} image${rows.count === 1 ? '' : 's'}; a map needs at least 2 (extract more, or add a split with --split a,b)`,
    );
  // As umap-learn does: a small dataset is laid out with every other point as a neighbour, not refused, so the
  // default k works on a handful of images.
  if (rows.count <= o.k) {
    o.log?.(
      `map: ${splits.join(' + ')} has ${rows.count} images, fewer than k + 1 = ${o.k + 1}; using k = ${rows.count - 1}`,
    );
    o.k = rows.count - 1;
  }
  const umap: UmapParameters = { ...o.umap, epochs: o.umap.epochs > 0 ? o.umap.epochs : defaultEpochs(rows.count) };
  const dir = mapDir(cache.dir, splits);
  const metaName = `layout-${setName(splits)}.json`;
  const stamps = await stampsOf(cache, splits);
  const old = await readJson<LayoutProvenance>(path.join(dir, metaName), 'map-layout');
  if (
    old &&
    sameStamps(old, stamps) &&
    old.algorithm === LAYOUT_ALGORITHM &&
    old.count === rows.count &&
    old.graph.k === o.k &&
    old.graph.metric === o.metric &&
    JSON.stringify(old.umap) === JSON.stringify(umap)
  ) {
    const buffer = await readPair(path.join(dir, old.file), rows.count);
    if (buffer) {
      return {
        x: new Float32Array(buffer, 0, rows.count),
        y: new Float32Array(buffer, rows.count * 4, rows.count),
        cached: true,
        seconds: (performance.now() - started) / 1000,
        provenance: old,
      };
    }
  }
  if (old)
    o.log?.(
      `map: the cached layout of ${splits.join(' + ')} is out of date (${staleReason(old, stamps, o, umap)}); recomputing`,
    );
  const graph = await graphFor(cache, rows, splits, o);
  const { x, y } = umapLayout(graph, umap, o.progress);
  const bytes = encodePair(x, y, rows.count);
  const seconds = (performance.now() - started) / 1000;
  const provenance: LayoutProvenance = {
    format: 1,
    kind: 'map-layout',
    algorithm: LAYOUT_ALGORITHM,
    ...stamps,
    splits,
    count: rows.count,
    graph: { k: o.k, metric: o.metric, method: graph.method, file: path.relative(cache.dir, graph.file) },
    umap,
    file: uniqueBinName(`layout-${setName(splits)}`),
    seconds,
    versions: toolVersions(),
    createdAt: new Date().toISOString(),
  };
  await replaceCached(dir, metaName, provenance, bytes, old);
  return { x, y, cached: false, seconds, provenance };
}

function staleReason(old: LayoutProvenance, stamps: Stamps, o: LayoutOptions, umap: UmapParameters): string {
  if (!sameStamps(old, stamps)) return 'the parts changed';
  if (old.algorithm !== LAYOUT_ALGORITHM) return `made by ${old.algorithm}`;
  if (old.graph.k !== o.k || old.graph.metric !== o.metric) return 'other neighbours';
  if (JSON.stringify(old.umap) !== JSON.stringify(umap)) return 'other UMAP parameters or seed';
  return 'its file is missing or damaged';
}
