/**
 * `featcache extract`: dataset → image → backbone → store. The next batch is read and decoded (sharp, on libuv's
 * pool, chained by this thread) while the current one runs in onnxruntime's worker thread; rows are committed in
 * atomic part files every --part-rows images, so a killed run resumes where the last commit ended and never writes
 * an image twice.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { type Backbone, type DeviceSpec, openBackbone } from '../backbone/index.js';
import { type Dataset, type DatasetOptions, type Item, openDataset } from '../dataset/index.js';
import type { ImageSource, ReadOutcome } from '../dataset/source.js';
import { type Shard, inShard, parseShard } from '../dataset/split.js';
import type { Skipped } from '../dataset/walk.js';
import { ExitCode, FeatcacheError, errorMessage } from '../errors.js';
import { decodeToRgb, writeNormalised } from '../image/preprocess.js';
import { type ImagePolicy, type Preset, getPreset } from '../image/presets.js';
import { acquireLock, removeStaleTemporaries } from '../store/lock.js';
import { type CacheManifest, CACHE_FORMAT, ensureManifest } from '../store/manifest.js';
import { type Failure, type Row, writePart } from '../store/part.js';
import { FeatureCache, type LatestRecord } from '../store/reader.js';
import { progressBar } from '../util/progress.js';
import { toolVersions } from '../version.js';
import type { Argv, CommandModule } from 'yargs';
import {
  type Args, backboneOptions, cacheOption, emit, imageOptions, imagePolicyFrom, jsonOption, nonNegativeInteger, parseDevice, positiveInteger,
} from './options.js';

export interface ExtractOptions extends DatasetOptions {
  model: string;
  tap?: string | undefined;
  preset: Preset;
  policy: ImagePolicy;
  cache: string;
  device: DeviceSpec;
  threads: number;
  /** Run the backbone in float16 (for GPUs); features stay float32. */
  fp16?: boolean | undefined;
  batchSize: number;
  /** Rows per committed part file: the most work a kill can lose. */
  partRows: number;
  strict: boolean;
  retryFailed: boolean;
  progress: boolean;
  log?: (line: string) => void;
}

export interface ExtractTimings {
  wallS: number;
  /** Time inference waited for decoding (decoding not hidden behind inference). */
  decodeWaitS: number;
  /** Wall time spent decoding batches (overlapping inference); with overlap most of it is hidden. */
  decodeBusyS: number;
  inferS: number;
  writeS: number;
  setupS: number;
}

export interface ExtractResult {
  split: string;
  cache: string;
  shard: string;
  provider: string;
  fallbackReasons: string[];
  dim: number;
  dataset: number;
  extracted: number;
  unchanged: number;
  failed: number;
  removed: number;
  skipped: Skipped[];
  failures: Failure[];
  imagesPerSecond: number;
  timings: ExtractTimings;
  bottleneck: 'decode' | 'inference' | 'write';
  interrupted: boolean;
  exitCode: number;
}

interface Prepared {
  items: Item[];
  rows: Row[];
  failures: Failure[];
  pixels: Float32Array;
  decodeBusyS: number;
}

/** Parts stay far below Arrow JS's 2 GiB limits whatever --part-rows says (e.g. when tapping an unpooled tensor). */
export const MAX_PART_BYTES = 512 * 1024 * 1024;

const shardLabel = (shard: Shard | undefined) => (shard ? `${shard.index}of${shard.count}` : '0of1');

/** Pulls up to `count` read outcomes from a source's iterator: one batch's worth of bytes (or failures). */
async function pull(reader: AsyncIterator<ReadOutcome>, count: number): Promise<ReadOutcome[]> {
  const outcomes: ReadOutcome[] = [];
  while (outcomes.length < count) {
    const next = await reader.next();
    if (next.done) break;
    outcomes.push(next.value);
  }
  return outcomes;
}

/** Reads and decodes a batch into one pixel buffer; an image that fails is recorded with the stage and message. */
async function prepareBatch(reader: AsyncIterator<ReadOutcome>, count: number, classes: string[], preset: Preset, policy: ImagePolicy, layout: 'NCHW' | 'NHWC'): Promise<Prepared> {
  const perImage = preset.crop * preset.crop * 3;
  const batchStarted = performance.now();
  const outcomes = await pull(reader, count);
  const decoded = await Promise.all(
    outcomes.map(async (outcome) => {
      const { item, stamp } = outcome;
      if ('failure' in outcome) {
        const failure: Failure = { path: item.path, ...outcome.failure, size: stamp.size, mtimeMs: stamp.mtimeMs };
        return { item, failure };
      }
      try {
        const rgb = await decodeToRgb(outcome.bytes, preset, policy);
        return { item, rgb, size: stamp.size, mtimeMs: stamp.mtimeMs };
      } catch (error) {
        const message = errorMessage(error).replace(/\s+/g, ' ').trim();
        return { item, failure: { path: item.path, stage: 'decode', message, size: stamp.size, mtimeMs: stamp.mtimeMs } };
      }
    }),
  );
  const ok = decoded.filter((d) => 'rgb' in d);
  const pixels = new Float32Array(ok.length * perImage);
  ok.forEach((d, i) => writeNormalised(d.rgb!, preset, layout, pixels, i));
  return {
    items: ok.map((d) => d.item),
    rows: ok.map((d) => ({
      path: d.item.path,
      label: d.item.label,
      labelName: d.item.label === null ? null : (classes[d.item.label] ?? null),
      size: d.size ?? 0,
      mtimeMs: d.mtimeMs ?? 0,
    })),
    failures: decoded.flatMap((d) => ('failure' in d && d.failure ? [d.failure] : [])),
    pixels,
    decodeBusyS: (performance.now() - batchStarted) / 1000,
  };
}

/** What to (re)extract: new paths, changed items (per the source), and (with --retry-failed) past failures. */
async function planWork(items: Item[], source: ImageSource, latest: Map<string, LatestRecord>, retryFailed: boolean) {
  const todo: Item[] = [];
  let unchanged = 0;
  for (const item of items) {
    const record = latest.get(item.path);
    if (record && record.kind !== 'removed' && !(record.kind === 'failure' && retryFailed)) {
      if (await source.unchanged(item, record)) {
        unchanged++;
        continue;
      }
    }
    todo.push(item);
  }
  return { todo, unchanged };
}

function manifestFor(options: ExtractOptions, backbone: Backbone, classes: string[]): CacheManifest {
  return {
    format: CACHE_FORMAT,
    modelFile: backbone.file,
    modelSha256: backbone.sha256,
    tappedTensor: backbone.tap.tensor,
    tap: { ...backbone.tap },
    preset: { ...options.preset },
    exif: options.policy.exif,
    icc: options.policy.icc,
    precision: backbone.precision,
    dim: backbone.dim,
    classes,
    createdAt: new Date().toISOString(),
    versions: toolVersions(),
  };
}

export async function extract(options: ExtractOptions): Promise<ExtractResult> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  const dataset = await openDataset({ ...options, log });
  if (dataset.items.length === 0) {
    await dataset.source.close();
    const why = dataset.skipped.length > 0 ? ` (${dataset.skipped.length} files skipped, e.g. ${dataset.skipped[0]!.path}: ${dataset.skipped[0]!.reason})` : '';
    throw new FeatcacheError(`--data ${options.data}: no images found for split "${options.split}"${options.shard ? ` in shard ${options.shard.index}/${options.shard.count}` : ''}${why}`);
  }
  try {
    const backbone = await openBackbone(options.model, { tap: options.tap, device: options.device, threads: options.threads, fp16: options.fp16 });
    try {
      return await extractWith(backbone, dataset, options, started, log);
    } finally {
      await backbone.close();
    }
  } finally {
    await dataset.source.close();
  }
}

async function extractWith(backbone: Backbone, dataset: Dataset, options: ExtractOptions, started: number, log: (line: string) => void): Promise<ExtractResult> {
  for (const reason of backbone.fallbackReasons) log(`device: not using ${reason}`);
  const expected = backbone.input.height;
  if (expected !== null && expected !== options.preset.crop) {
    throw new FeatcacheError(`--preset ${options.preset.name}: crops ${options.preset.crop}×${options.preset.crop} but --model ${options.model} takes ${expected}×${backbone.input.width}; choose a preset with that crop`);
  }
  await ensureManifest(options.cache, manifestFor(options, backbone, dataset.classes));
  const splitDir = path.join(options.cache, options.split);
  await fs.mkdir(splitDir, { recursive: true });
  const shard = shardLabel(options.shard);
  const lock = await acquireLock(path.join(splitDir, `.lock-${shard}`), `--cache ${options.cache} split ${options.split} shard ${shard}`);
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await removeStaleTemporaries(splitDir, shard);
    const cache = await FeatureCache.open(options.cache);
    const latest = await cache.latest(options.split);
    const { todo, unchanged } = await planWork(dataset.items, dataset.source, latest, options.retryFailed);
    const present = new Set(dataset.items.map((i) => i.path));
    const removed = [...latest.entries()]
      .filter(([p, r]) => r.kind !== 'removed' && !present.has(p) && (!options.shard || inShard(options.shard, p)))
      .map(([p]) => p);
    const runId = `${String(Date.now()).padStart(15, '0')}-${shard}-${process.pid}`;
    const timings: ExtractTimings = { wallS: 0, decodeWaitS: 0, decodeBusyS: 0, inferS: 0, writeS: 0, setupS: (performance.now() - started) / 1000 };
    const provenance = { ...manifestFor(options, backbone, dataset.classes), provider: backbone.provider, dataRoot: dataset.root, layout: dataset.layout };

    let pending: { rows: Row[]; features: Float32Array[]; failures: Failure[] } = { rows: [], features: [], failures: [] };
    let sequence = 0;
    let extracted = 0;
    const allFailures: Failure[] = [];
    const commit = async (removedPaths: string[]) => {
      if (pending.rows.length === 0 && pending.failures.length === 0 && removedPaths.length === 0) return;
      const t = performance.now();
      const features = new Float32Array(pending.rows.length * backbone.dim);
      pending.features.reduce((offset, f) => (features.set(f, offset), offset + f.length), 0);
      const file = path.join(splitDir, `part-${runId}-${String(sequence++).padStart(6, '0')}.arrow`);
      await writePart(file, {
        meta: { split: options.split, shard, runId, dim: backbone.dim, failures: pending.failures, removed: removedPaths, provenance },
        rows: pending.rows,
        features,
      }).catch((error: NodeJS.ErrnoException) => {
        throw new FeatcacheError(`--cache ${options.cache}: cannot write ${file} (${error.code ?? error.message}); parts already written are intact — free space and re-run to resume`, 1);
      });
      pending = { rows: [], features: [], failures: [] };
      timings.writeS += (performance.now() - t) / 1000;
    };

    const partRows = Math.max(1, Math.min(options.partRows, Math.floor(MAX_PART_BYTES / (backbone.dim * 4))));
    const batches = Math.ceil(todo.length / options.batchSize);
    const progress = progressBar(`extract ${options.split}`, todo.length, options.progress);
    const reader = dataset.source.read(todo)[Symbol.asyncIterator]();
    const prepare = () => prepareBatch(reader, options.batchSize, dataset.classes, options.preset, options.policy, backbone.input.layout);
    let next = batches > 0 ? prepare() : null;
    for (let b = 0; b < batches && next && !interrupted; b++) {
      const waitStarted = performance.now();
      const batch = await next;
      timings.decodeWaitS += (performance.now() - waitStarted) / 1000;
      timings.decodeBusyS += batch.decodeBusyS;
      next = b + 1 < batches ? prepare() : null;
      if (options.strict && batch.failures.length > 0) {
        const f = batch.failures[0]!;
        const where = dataset.source.kind === 'files' ? path.join(dataset.root, f.path) : f.path;
        throw new FeatcacheError(`${where}: ${f.stage} failed (${f.message}); --strict stops at the first unusable image`, 1);
      }
      if (batch.rows.length > 0) {
        const t = performance.now();
        const features = await backbone.extract(batch.pixels, batch.rows.length, options.preset.crop);
        timings.inferS += (performance.now() - t) / 1000;
        pending.rows.push(...batch.rows);
        pending.features.push(features);
      }
      pending.failures.push(...batch.failures);
      allFailures.push(...batch.failures);
      extracted += batch.rows.length;
      progress.increment(batch.items.length + batch.failures.length);
      if (pending.rows.length + pending.failures.length >= partRows) await commit([]);
    }
    await next?.catch(() => {});
    await reader.return?.();
    // Removals are only known once the whole dataset has been seen.
    await commit(interrupted ? [] : removed);
    progress.stop();
    timings.wallS = (performance.now() - started) / 1000;
    const exposed = { decode: timings.decodeWaitS, inference: timings.inferS, write: timings.writeS };
    const bottleneck = (Object.entries(exposed).sort((a, b) => b[1] - a[1])[0]![0]) as ExtractResult['bottleneck'];
    return {
      split: options.split,
      cache: options.cache,
      shard,
      provider: backbone.provider,
      fallbackReasons: backbone.fallbackReasons,
      dim: backbone.dim,
      dataset: dataset.items.length,
      extracted,
      unchanged,
      failed: allFailures.length,
      removed: interrupted ? 0 : removed.length,
      skipped: dataset.skipped,
      failures: allFailures,
      imagesPerSecond: (extracted + allFailures.length) / Math.max(timings.wallS - timings.setupS, 1e-9),
      timings,
      bottleneck,
      interrupted,
      exitCode: interrupted ? ExitCode.failed : allFailures.length > 0 ? ExitCode.partial : ExitCode.ok,
    };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await lock.release();
  }
}

// ---- command line ----

export function summaryLine(r: ExtractResult): string {
  const t = r.timings;
  const failed = r.failed > 0 ? `; ${r.failed} failed (see 'featcache info --cache ${r.cache} --failures')` : '';
  const skipped = r.skipped.length > 0 ? `; ${r.skipped.length} non-image files skipped` : '';
  const stopped = r.interrupted ? ' — interrupted; re-run the same command to resume' : '';
  return (
    `extract ${r.split}: ${r.extracted} extracted, ${r.unchanged} unchanged, ${r.removed} removed of ${r.dataset} images → ${r.cache}/${r.split} ` +
    `(${r.dim}-d, ${r.provider}, ${r.imagesPerSecond.toFixed(1)} img/s; ${t.wallS.toFixed(1)} s: decode ${t.decodeWaitS.toFixed(1)} s exposed ` +
    `(${t.decodeBusyS.toFixed(1)} s busy), inference ${t.inferS.toFixed(1)} s, write ${t.writeS.toFixed(1)} s, setup ${t.setupS.toFixed(1)} s; bottleneck: ${r.bottleneck})` +
    `${failed}${skipped}${stopped}`
  );
}

export const extractCommand: CommandModule = {
  command: 'extract',
  describe: 'run the backbone over a dataset split and cache tapped features in Arrow files',
  builder: (y: Argv) =>
    y
      .option('data', { type: 'string', demandOption: true, describe: 'dataset root (ImageFolder), image folder, or .txt list of images' })
      .option('split', { type: 'string', default: 'train', describe: 'split to extract: a split folder (train/val/test), or train/val with --val-fraction' })
      .option('labels', { type: 'string', describe: 'CSV of id,label (Kaggle layout); images in --images' })
      .option('images', { type: 'string', describe: 'image directory for --labels (default <data>/<split>, else <data>/train)' })
      .option('val-fraction', { type: 'number', describe: 'stratified validation fraction when the data has no split folders' })
      .option('seed', { type: 'number', default: 0, describe: 'seed of the stratified split' })
      .option('cache', cacheOption)
      .options(backboneOptions)
      .options(imageOptions)
      .option('shard', { type: 'string', describe: 'K/N: process only shard K (0-based) of N; run N processes into the same cache' })
      .option('fp16', { type: 'boolean', default: false, describe: 'run the backbone in float16 (for GPUs; features stay float32)' })
      .option('part-rows', { type: 'number', default: 512, describe: 'images per committed part file (the most a kill can lose)' })
      .option('strict', { type: 'boolean', default: false, describe: 'stop at the first unusable image (default: record it and go on)' })
      .option('retry-failed', { type: 'boolean', default: false, describe: 'retry images that failed in earlier runs' })
      .option('progress', { type: 'boolean', default: true, describe: 'progress bar on a terminal' })
      .option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as Args;
    const result = await extract({
      data: a.data,
      split: a.split as string,
      labels: a.labels as string | undefined,
      images: a.images as string | undefined,
      valFraction: a['val-fraction'] as number | undefined,
      seed: a.seed as number,
      model: a.model as string,
      tap: a.tap as string,
      preset: getPreset(a.preset as string),
      policy: imagePolicyFrom(a),
      cache: a.cache as string,
      device: parseDevice(a.device as string),
      threads: nonNegativeInteger('--threads', a.threads as number),
      fp16: a.fp16 as boolean,
      batchSize: positiveInteger('--batch-size', a['batch-size'] as number),
      partRows: positiveInteger('--part-rows', a['part-rows'] as number),
      shard: a.shard ? parseShard(a.shard as string) : undefined,
      strict: a.strict as boolean,
      retryFailed: a['retry-failed'] as boolean,
      progress: (a.progress as boolean) && !a.json,
      log: (line) => process.stderr.write(`${line}\n`),
    });
    emit(a.json as boolean, result, () => summaryLine(result));
    process.exitCode = result.exitCode;
  },
};
