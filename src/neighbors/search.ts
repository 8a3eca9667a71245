/**
 * Split-level neighbour search: a split's rows as the reference, searched exactly (blocked products) below a size
 * threshold and through the persisted HNSW index above it; and the cached self-kNN graph of a split, which later
 * stages (the map's UMAP, the audit's kNN consensus) reuse instead of recomputing.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { invalidParameter } from '../errors.js';
import { BlockProduct } from './product.js';
import { FeatureCache } from '../store/reader.js';
import { encodePair, readPair, replaceCached, uniqueBinName } from '../util/cached-pair.js';
import { withDefaults } from '../util/options.js';
import { toolVersions } from '../version.js';
import { type KnnResult, type Metric, METRICS, type PreparedReference, exactKnn, prepareReference } from './exact.js';
import { DEFAULT_HNSW_OPTIONS, HnswIndex, type HnswOptions, INDEX_DIR } from './hnsw.js';
import { ANN_THRESHOLD } from './threshold.js';
import { type IndexIdentity, type PartStamp, type SplitRows, identityOf, loadSplit, partStamps } from './split.js';

export type SearchMethod = 'auto' | 'exact' | 'hnsw';
export const SEARCH_METHODS: readonly SearchMethod[] = Object.freeze(['auto', 'exact', 'hnsw']);

export interface SearchOptions {
  metric: Metric;
  /** auto: exact below `annThreshold` reference rows, HNSW from there on. */
  method: SearchMethod;
  /** Reference rows from which `auto` uses the HNSW index (ANN_THRESHOLD: measured, see ./threshold.ts). */
  annThreshold: number;
  hnsw: HnswOptions;
  log?: (line: string) => void;
}

export const DEFAULT_SEARCH_OPTIONS: Readonly<SearchOptions> = Object.freeze({
  metric: 'cosine',
  method: 'auto',
  annThreshold: ANN_THRESHOLD,
  hnsw: DEFAULT_HNSW_OPTIONS,
});

/** A split opened as a kNN reference; keep it open to answer many queries (serve). */
export class SplitSearcher {
  /** The reference's norms and unit rows, made at the first exact search and kept for the searcher's life. */
  private prepared: PreparedReference | null = null;

  private constructor(
    readonly rows: SplitRows,
    readonly method: 'exact' | 'hnsw',
    readonly metric: Metric,
    private readonly product: BlockProduct,
    private readonly hnsw: HnswIndex | null,
  ) {}

  static async open(cacheDir: string, split: string, options: Partial<SearchOptions> = {}): Promise<SplitSearcher> {
    const o = withDefaults(DEFAULT_SEARCH_OPTIONS, options);
    if (!METRICS.includes(o.metric)) throw invalidParameter('metric', METRICS.join(' or '), o.metric);
    if (!SEARCH_METHODS.includes(o.method)) throw invalidParameter('method', SEARCH_METHODS.join(', '), o.method);
    const cache = await FeatureCache.open(cacheDir);
    const rows = await loadSplit(cache, await cache.resolveSplit(split));
    const method = o.method === 'auto' ? (rows.count >= o.annThreshold ? 'hnsw' : 'exact') : o.method;
    const hnsw =
      method === 'hnsw'
        ? await HnswIndex.open(
            cacheDir,
            rows,
            identityOf(cache.manifest),
            await partStamps(cache, split),
            o.metric,
            o.hnsw,
            o.log,
          )
        : null;
    return new SplitSearcher(rows, method, o.metric, new BlockProduct(), hnsw);
  }

  /** What opening the HNSW index did (null for exact search). */
  get indexUpdate(): HnswIndex['update'] | null {
    return this.hnsw?.update ?? null;
  }

  /** k nearest rows of this split (indices into `rows`) for each query row. */
  async search(query: Float32Array, count: number, k: number, excludeSelf = false): Promise<KnnResult> {
    if (this.hnsw) return this.hnsw.search(query, count, k, { excludeSelf });
    this.prepared ??= prepareReference(this.rows.features, this.rows.count, this.rows.dim, this.metric);
    return exactKnn(query, count, this.rows.features, this.rows.count, this.rows.dim, {
      k,
      metric: this.metric,
      excludeSelf,
      product: this.product,
      prepared: this.prepared,
    });
  }

  async close(): Promise<void> {
    await this.product.dispose();
  }
}

export interface NeighborsOptions extends SearchOptions {
  cache: string;
  /** Query split. */
  split: string;
  /** Reference split; the query split itself (each row never listing itself) when absent. */
  against?: string;
  k: number;
}

export const DEFAULT_NEIGHBORS_OPTIONS: Readonly<Omit<NeighborsOptions, 'split'>> = Object.freeze({
  ...DEFAULT_SEARCH_OPTIONS,
  cache: './features',
  k: 10,
});

export interface NeighborsResult extends KnnResult {
  query: SplitRows;
  reference: SplitRows;
  k: number;
  metric: Metric;
  method: 'exact' | 'hnsw';
}

/**
 * Top-k neighbours of every row of a split, within the split or against another one.
 *
 * @example
 * const { query, reference, indices, distances } = await neighbors({ split: 'val', against: 'train', k: 5 });
 */
export async function neighbors(options: Partial<NeighborsOptions> & { split: string }): Promise<NeighborsResult> {
  const o = withDefaults(DEFAULT_NEIGHBORS_OPTIONS, options);
  if (!Number.isInteger(o.k) || o.k < 1) throw invalidParameter('k', 'a positive integer', o.k);
  const against = o.against ?? o.split;
  const searcher = await SplitSearcher.open(o.cache, against, o);
  try {
    const self = against === o.split;
    const queryCache = self ? null : await FeatureCache.open(o.cache);
    const query = queryCache ? await loadSplit(queryCache, await queryCache.resolveSplit(o.split)) : searcher.rows;
    const found = await searcher.search(query.features, query.count, o.k, self);
    return { ...found, query, reference: searcher.rows, k: o.k, metric: o.metric, method: searcher.method };
  } finally {
    await searcher.close();
  }
}

export interface KnnGraphOptions extends SearchOptions {
  cache: string;
  split: string;
  k: number;
}

export interface KnnGraph extends KnnResult {
  split: string;
  /** Row i of the graph is this path (the split sorted by path). */
  paths: string[];
  k: number;
  metric: Metric;
  method: 'exact' | 'hnsw';
  /** Whether it came from the cache on disk. */
  cached: boolean;
}

interface GraphMeta {
  format: 1;
  kind: 'knn-graph';
  metric: Metric;
  k: number;
  method: 'exact' | 'hnsw';
  identity: IndexIdentity;
  parts: PartStamp[];
  paths: string[];
  file: string;
  versions: Record<string, string>;
  createdAt: string;
}

/**
 * The self-kNN graph of a split (each row's k nearest other rows), cached beside the split's parts and reused while
 * the split's parts and the cache's identity are unchanged; any change to the parts recomputes it (a new row can be
 * anyone's neighbour, so there is no cheaper correct update for a graph).
 *
 * @example
 * const graph = await knnGraph({ cache: 'features', split: 'train', k: 15, metric: 'cosine' });
 */
export async function knnGraph(options: Partial<KnnGraphOptions> & { split: string }): Promise<KnnGraph> {
  const o = withDefaults({ ...DEFAULT_SEARCH_OPTIONS, cache: './features', k: 15 }, options);
  if (!Number.isInteger(o.k) || o.k < 1) throw invalidParameter('k', 'a positive integer', o.k);
  const cache = await FeatureCache.open(o.cache);
  const split = await cache.resolveSplit(o.split);
  const identity = identityOf(cache.manifest);
  const stamps = await partStamps(cache, split);
  const dir = path.join(o.cache, split, INDEX_DIR);
  const metaFile = path.join(dir, `graph-${o.metric}-k${o.k}.json`);
  const old = await readGraphMeta(metaFile);
  if (old && JSON.stringify(old.identity) === JSON.stringify(identity) && sameParts(old.parts, stamps)) {
    const n = old.paths.length * old.k;
    const buffer = await readPair(path.join(dir, old.file), n);
    if (buffer) {
      return {
        split,
        paths: old.paths,
        k: old.k,
        metric: old.metric,
        method: old.method,
        cached: true,
        indices: new Int32Array(buffer, 0, n),
        distances: new Float32Array(buffer, n * 4, n),
      };
    }
  }
  if (old) o.log?.(`neighbours: the kNN graph of ${split} is out of date (its parts changed); recomputing`);
  const found = await neighbors({ ...o, split, against: split });
  const n = found.query.count * o.k;
  const bytes = encodePair(found.indices, found.distances, n);
  const meta: GraphMeta = {
    format: 1,
    kind: 'knn-graph',
    metric: o.metric,
    k: o.k,
    method: found.method,
    identity,
    parts: stamps,
    paths: found.query.paths,
    file: uniqueBinName(`graph-${o.metric}-k${o.k}`),
    versions: toolVersions(),
    createdAt: new Date().toISOString(),
  };
  await replaceCached(dir, path.basename(metaFile), meta, bytes, old);
  return {
    split,
    paths: found.query.paths,
    k: o.k,
    metric: o.metric,
    method: found.method,
    cached: false,
    indices: found.indices,
    distances: found.distances,
  };
}

function sameParts(a: PartStamp[], b: PartStamp[]): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

async function readGraphMeta(file: string): Promise<GraphMeta | null> {
  try {
    const meta = JSON.parse(await fs.readFile(file, 'utf8')) as GraphMeta;
    return meta.format === 1 && meta.kind === 'knn-graph' ? meta : null;
  } catch {
    return null;
  }
}
