/**
 * The map job: every cached image of one or more splits on one page, laid out by UMAP over the neighbours engine's
 * kNN graph (cached, with the layout, beside the parts), coloured by label, by a saved head's prediction on the
 * cached features, or by an audit's label-quality score.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { checkFeaturePrecision } from '../backbone/int8.js';
import {
  FeatcacheError,
  invalidParameter,
  missingFile,
  nonNegativeInteger,
  numberIn,
  optionName,
  parseChoice,
  positiveInteger,
} from '../errors.js';
import { applyNormalization } from '../head/normalize.js';
import { loadTf } from '../head/runtime.js';
import { DEFAULT_HEAD_DIR, HEAD_FILE, loadHead } from '../head/saved.js';
import { readAuditScores } from '../map/audit-scores.js';
import {
  type MapAudit,
  MAP_COLORS,
  type MapColor,
  type MapData,
  type MapPageResult,
  type MapPredictions,
} from '../map/data.js';
import { type LayoutProvenance, mapLayout } from '../map/layout.js';
import { DEFAULT_UMAP_PARAMETERS } from '../map/umap.js';
import { MAX_THUMBNAIL_SIZE } from '../map/thumbnails.js';
import { checkMapOut, writeMapPage } from '../map/page.js';
import { type Metric, METRICS } from '../neighbors/exact.js';
import { rowSources } from '../neighbors/duplicates.js';
import { loadSplit, type SplitRows } from '../neighbors/split.js';
import { FeatureCache } from '../store/reader.js';
import { exists } from '../util/fsx.js';
import { withDefaults } from '../util/options.js';
import { DEFAULT_MAP_OPTIONS } from './defaults.js';

export { DEFAULT_MAP_OPTIONS };

export interface MapOptions {
  cache: string;
  /** Splits laid out together (one graph over their union). */
  splits: string[];
  /** The page written. */
  out: string;
  /** The colouring the page opens with (the page can switch among those it has data for). */
  color: MapColor;
  /**
   * A saved head whose predictions on the cached features the page shows. null: the default head directory
   * (models/head) when it exists and was trained on this cache's features; otherwise no predictions.
   */
  head: string | null;
  /** An audit's output directory (audit.json, scores.csv): label-quality scores and flags per point. */
  audit: string | null;
  /** Neighbours per point in the graph the layout starts from. */
  k: number;
  metric: Metric;
  seed: number;
  /** UMAP epochs; 0 = umap-learn's choice (500 up to 10 000 points, 200 above). */
  epochs: number;
  minDist: number;
  thumbnails: boolean;
  thumbnailSize: number;
  log?: ((line: string) => void) | undefined;
}

export interface MapResult {
  page: string;
  cache: string;
  splits: string[];
  points: number;
  color: MapColor;
  layout: { cached: boolean; seconds: number; provenance: LayoutProvenance };
  /** Where the predictions and audit scores came from, or null. */
  head: string | null;
  audit: string | null;
  pageResult: MapPageResult;
  seconds: number;
}

const MAX_SEED = 2 ** 32 - 1;

function firstFew(names: string[]): string {
  return names.slice(0, 3).join(', ') + (names.length > 3 ? ', …' : '');
}

function checkOptions(o: MapOptions): void {
  parseChoice('color', o.color, MAP_COLORS);
  parseChoice('metric', o.metric, METRICS);
  positiveInteger('k', o.k);
  positiveInteger('thumbnailSize', o.thumbnailSize);
  // A sprite is SPRITE_COLUMNS thumbnails wide: past this size it outgrows what JPEG and memory hold.
  if (o.thumbnailSize > MAX_THUMBNAIL_SIZE)
    throw invalidParameter('thumbnailSize', `a positive integer up to ${MAX_THUMBNAIL_SIZE}`, o.thumbnailSize);
  numberIn('minDist', o.minDist, 0, 1);
  nonNegativeInteger('seed', o.seed);
  // The generator keeps 32 bits of the seed: larger seeds would silently draw the picture of a smaller one.
  if (o.seed > MAX_SEED) throw invalidParameter('seed', `an integer in [0, ${MAX_SEED}]`, o.seed);
  nonNegativeInteger('epochs', o.epochs);
  if (o.splits.length === 0) throw new FeatcacheError(`${optionName('split')}: expected at least one split, got none`);
  const twice = o.splits.find((s, i) => o.splits.indexOf(s) !== i);
  if (twice) throw new FeatcacheError(`${optionName('split')}: ${twice} is named twice`);
  if (o.color === 'audit' && !o.audit)
    throw new FeatcacheError(
      `${optionName('color')} audit: needs an audit's scores; pass ${optionName('audit')} DIR (a directory written by 'featcache audit --out DIR')`,
    );
}

/** Predictions of a saved head on the loaded rows, or null when no head applies. @internal */
export async function headPredictions(
  cache: FeatureCache,
  rows: SplitRows[],
  given: string | null,
  log: (line: string) => void,
): Promise<MapPredictions | null> {
  const dir = given ?? DEFAULT_HEAD_DIR;
  if (!given && !(await exists(path.join(dir, HEAD_FILE)))) return null;
  const runtime = await loadTf('auto');
  const head = await loadHead(runtime.tf, dir);
  try {
    const p = head.info.provenance;
    const m = cache.manifest;
    const mismatch =
      p.modelSha256 !== m.modelSha256 || p.tappedTensor !== m.tappedTensor || p.dim !== m.dim
        ? `was trained on features of another model or tap (${p.modelSha256.slice(0, 12)}…, ${p.tappedTensor}) than cache ${cache.dir} (${m.modelSha256.slice(0, 12)}…, ${m.tappedTensor})`
        : null;
    if (mismatch) {
      if (!given) {
        log(`map: the head in ${dir} ${mismatch}; the map shows no predictions (pass --head for another head)`);
        return null;
      }
      throw new FeatcacheError(`${optionName('head')} ${dir}: ${mismatch}; pass the head trained on this cache`);
    }
    checkFeaturePrecision(`${optionName('head')} ${dir}`, p, {
      precision: m.precision ?? 'fp32',
      calibrationHash: m.calibrationHash ?? undefined,
    });
    const classes = rows[0]!.classes;
    const classIndex = head.info.classes.map((c) => classes.indexOf(c));
    // Same backbone, other dataset: every prediction would be a class the map does not have.
    if (classIndex.every((c) => c === -1)) {
      const none = `knows none of the classes of cache ${cache.dir} (${firstFew(head.info.classes)} against ${firstFew(classes)})`;
      if (!given) {
        log(`map: the head in ${dir} ${none}; the map shows no predictions (pass --head for another head)`);
        return null;
      }
      throw new FeatcacheError(`${optionName('head')} ${dir}: ${none}; pass the head trained on this dataset`);
    }
    const total = rows.reduce((n, r) => n + r.count, 0);
    const index = new Int32Array(total);
    const probability = new Float32Array(total);
    let offset = 0;
    const width = head.info.classes.length;
    for (const r of rows) {
      const features = Float32Array.from(r.features.subarray(0, r.count * r.dim));
      applyNormalization(head.info.normalization, features, r.count, r.dim);
      const probabilities = head.predict(features, r.count);
      for (let i = 0; i < r.count; i++) {
        let best = 0;
        for (let c = 1; c < width; c++) if (probabilities[i * width + c]! > probabilities[i * width + best]!) best = c;
        index[offset + i] = classIndex[best]!;
        probability[offset + i] = probabilities[i * width + best]!;
      }
      offset += r.count;
    }
    if (classIndex.includes(-1))
      log(
        `map: the head in ${dir} knows classes the cache does not (${head.info.classes.filter((_, c) => classIndex[c] === -1).join(', ')}); such predictions show as -1`,
      );
    return { source: `saved head ${path.resolve(dir)}`, index, probability };
  } finally {
    head.dispose();
  }
}

/** The audit's scores on the loaded rows (NaN and no flags for rows of splits it did not audit). @internal */
export async function auditOf(
  cache: FeatureCache,
  rows: SplitRows[],
  dir: string,
  log: (line: string) => void,
): Promise<MapAudit> {
  const scores = await readAuditScores(dir);
  if (scores.modelSha256 && scores.modelSha256 !== cache.manifest.modelSha256)
    throw new FeatcacheError(
      `${optionName('audit')} ${dir}: audits features of another model (${scores.modelSha256.slice(0, 12)}…) than cache ${cache.dir}; audit this cache first`,
    );
  if (!rows.some((r) => r.split === scores.split))
    log(`map: the audit in ${dir} is of split ${scores.split}, not on the map; no point has a score`);
  const score: number[] = [];
  const flags: string[][] = [];
  for (const r of rows)
    for (const p of r.paths) {
      const found = r.split === scores.split ? scores.rows.get(p) : undefined;
      score.push(found?.score ?? NaN);
      flags.push(found?.flags ?? []);
    }
  return { source: path.resolve(dir), score: Float32Array.from(score), flags };
}

/**
 * Lays out a cache's splits and writes the map page.
 *
 * @example
 * const { page, points, layout } = await map({ cache: 'features', splits: ['train', 'val'], out: 'map.html' });
 */
export async function map(options: Partial<MapOptions> = {}): Promise<MapResult> {
  const o = withDefaults(DEFAULT_MAP_OPTIONS, options);
  checkOptions(o);
  const log = o.log ?? (() => {});
  const started = performance.now();
  if (o.head && !(await exists(o.head)))
    throw missingFile(
      'head',
      o.head,
      `train one with 'featcache train-head --head ${o.head}', or leave ${optionName('head')} out`,
    );
  if (o.audit && !(await fs.stat(o.audit).catch(() => null))?.isDirectory())
    throw missingFile('audit', o.audit, `write one with 'featcache audit --out ${o.audit}'`);
  if (o.color === 'prediction' && !o.head && !(await exists(path.join(DEFAULT_HEAD_DIR, HEAD_FILE))))
    throw new FeatcacheError(
      `${optionName('color')} prediction: needs a head; pass ${optionName('head')} DIR (no head in ${DEFAULT_HEAD_DIR}; train one with 'featcache train-head')`,
    );
  await checkMapOut(o.out, o.thumbnails);
  const cache = await FeatureCache.open(o.cache);
  const rows: SplitRows[] = [];
  for (const split of o.splits) rows.push(await loadSplit(cache, await cache.resolveSplit(split)));
  const splits = rows.map((r) => r.split);
  if (splits.some((s, i) => s !== o.splits[i]))
    log(`map: splits ${o.splits.join(', ')} are cached as ${splits.join(', ')}`);
  // The head and the audit are checked before the layout, which is the long part.
  const predictions = await headPredictions(cache, rows, o.head, log);
  if (o.color === 'prediction' && !predictions)
    throw new FeatcacheError(
      `${optionName('color')} prediction: needs a head trained on cache ${o.cache}; pass ${optionName('head')} DIR`,
    );
  const audit = o.audit ? await auditOf(cache, rows, o.audit, log) : null;
  const layout = await mapLayout(cache, rows, {
    k: o.k,
    metric: o.metric,
    umap: { ...DEFAULT_UMAP_PARAMETERS, epochs: o.epochs, minDist: o.minDist, seed: o.seed },
    log,
    // Large layouts take minutes: say how far along they are, ten times.
    progress: (epoch, epochs) => {
      const total = rows.reduce((n, r) => n + r.count, 0);
      if (total >= 10_000 && epoch % Math.ceil(epochs / 10) === 0) log(`map: layout epoch ${epoch}/${epochs}`);
    },
  });
  log(
    `map: layout of ${layout.provenance.count} points ${layout.cached ? 'reused from the cache' : `computed in ${layout.seconds.toFixed(1)} s`}`,
  );
  const files: (string | null)[] = [];
  for (const r of rows) files.push(...(await rowSources(cache, r, log)).files);
  const m = cache.manifest;
  const data: MapData = {
    title: `featcache map: ${o.splits.join(' + ')} (${layout.provenance.count} images)`,
    provenance: {
      cache: path.resolve(o.cache),
      modelSha256: m.modelSha256,
      modelFile: m.modelFile,
      tappedTensor: m.tappedTensor,
      preset: m.preset.name,
      precision: m.precision ?? 'fp32',
      layout: {
        algorithm: layout.provenance.algorithm,
        k: layout.provenance.graph.k,
        metric: layout.provenance.graph.metric,
        graph: layout.provenance.graph.method,
        umap: layout.provenance.umap,
        createdAt: layout.provenance.createdAt,
      },
      head: predictions?.source ?? null,
      audit: audit?.source ?? null,
      versions: layout.provenance.versions,
    },
    classes: rows[0]!.classes,
    splits,
    count: layout.provenance.count,
    x: layout.x,
    y: layout.y,
    paths: rows.flatMap((r) => r.paths),
    split: Uint8Array.from(rows.flatMap((r, s) => r.paths.map(() => s))),
    label: Int32Array.from(rows.flatMap((r) => [...r.labels])),
    files,
    predictions,
    audit,
    color: o.color,
  };
  const pageResult = await writeMapPage(o.out, data, { thumbnails: o.thumbnails, thumbnailSize: o.thumbnailSize, log });
  return {
    page: pageResult.page,
    cache: o.cache,
    splits,
    points: data.count,
    color: o.color,
    layout: { cached: layout.cached, seconds: layout.seconds, provenance: layout.provenance },
    head: predictions?.source ?? null,
    audit: audit?.source ?? null,
    pageResult,
    seconds: (performance.now() - started) / 1000,
  };
}
