/**
 * The extract job: dataset → image → backbone → store. It reads as open → plan → decode/infer → write: the next
 * batch is read and decoded (sharp, on libuv's pool, chained by this thread) while the current one runs in
 * onnxruntime's worker thread, and a SplitWriter commits atomic parts, so a killed run resumes where the last commit
 * ended and never stores an image twice.
 */
import { type Backbone, type KeptCalibration, openBackbone } from '../backbone/index.js';
import { datasetCalibrationSource } from '../backbone/calibration-source.js';
import { RANGE_METHODS, type RangeMethod } from '../backbone/int8-defaults.js';
import { parseDevice, threadCount } from '../backbone/device.js';
import { type Dataset, type DatasetOptions, type Item, openDataset } from '../dataset/index.js';
import type { Stamp } from '../dataset/source.js';
import { type Shard, parseShard } from '../dataset/split.js';
import type { Skipped } from '../dataset/walk.js';
import {
  ExitCode,
  FeatcacheError,
  nonNegativeInteger,
  numberIn,
  optionName,
  parseChoice,
  positiveInteger,
} from '../errors.js';
import { type DecodedBatch, decodeBatch, maxBatchSize } from '../image/batch.js';
import {
  EXIF_POLICIES,
  ICC_POLICIES,
  type ImagePolicy,
  type Preset,
  getPreset,
  maxPixelsLimit,
} from '../image/presets.js';
import { type CacheManifest, CACHE_FORMAT, ensureManifest, readManifest } from '../store/manifest.js';
import type { Failure, Row } from '../store/part.js';
import { SplitWriter, shardLabel } from '../store/writer.js';
import { sha256Bytes } from '../util/fsx.js';
import { withDefaults } from '../util/options.js';
import { progressBar } from '../util/progress.js';
import { toolVersions } from '../version.js';
import { DEFAULT_EXTRACT_OPTIONS } from './defaults.js';

export { DEFAULT_EXTRACT_OPTIONS };

/** The dataset options (see DatasetOptions), then the backbone's, the image policy's and the writer's. */
export interface ExtractOptions extends Omit<DatasetOptions, 'shard' | 'followSymlinks'> {
  /** Process only shard K of N: `"K/N"` or `{ index, count }`. */
  shard?: string | Shard | undefined;
  /** Follow symlinks that lead outside the data root (refused by default). */
  followSymlinks: boolean;
  /** ONNX backbone file. */
  model: string;
  /** What to tap: `avgpool` (the pool feeding the classifier), a node, tensor or PyTorch module name. */
  tap: string;
  /** Preprocessing preset name (see PRESETS). */
  preset: string;
  /** EXIF orientation: `ignore` matches PIL/torchvision, `apply` rotates upright. */
  exif: ImagePolicy['exif'];
  /** Embedded colour profiles: `ignore` matches PIL, `convert` converts to sRGB. */
  icc: ImagePolicy['icc'];
  /** Refuse images with more pixels before decoding (PIL's decompression-bomb limit). */
  maxPixels: number;
  /** Feature cache directory. */
  cache: string;
  /** `auto` (CUDA, then CPU), `cpu`, `cuda` or `cuda:N`. */
  device: string;
  /** onnxruntime intra-op threads; 0 = one per core. */
  threads: number;
  /** Run the backbone in float16 (for GPUs); features stay float32. */
  fp16: boolean;
  /**
   * Run a calibrated int8 copy of the backbone (CPU throughput, ~3.5× on ResNet50 with VNNI). Quantised on first use
   * from a seeded sample of the train split (else this split), saved in featcache's cache folder and reused; features are
   * identified by the calibration and never mixed with FP32 ones. Falls back to FP32, saying why, if it cannot fuse.
   */
  int8: boolean;
  /**
   * Images in the int8 calibration sample. This and the two below shape the first calibration of a cache; later runs
   * keep the cache's calibration, and refuse a value given that differs from the one it was made with.
   */
  calibrate: number;
  /** How activation ranges are chosen: `mse` (least quantisation error), `minmax`, or `percentile`. */
  calibrationRanges: RangeMethod;
  /** The upper percentile kept by `percentile` ranges. */
  calibrationPercentile: number;
  /** Where the int8 model is saved (default: featcache's cache folder, by the model's sha256). */
  int8Dir?: string | undefined;
  /** Images per inference call; capped so a batch's pixels stay under MAX_BATCH_BYTES. */
  batchSize: number;
  /** Images per committed part file: the most work a kill can lose. */
  partRows: number;
  /** Stop at the first unusable image instead of recording it. */
  strict: boolean;
  /** Retry images that failed in earlier runs. */
  retryFailed: boolean;
  /** A progress bar on a terminal. */
  progress: boolean;
  /** Where progress notes go (device fallbacks, capped batch size); silent by default. */
  log?: ((line: string) => void) | undefined;
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
  /**
   * Steady state: the images after the first batch over the time from the first batch's end to the last one's, so
   * without setup, the first decode, onnxruntime's first (cold) run and the final commit. Absent under two batches.
   */
  steady?: { images: number; seconds: number; imagesPerSecond: number };
}

export interface ExtractResult {
  split: string;
  cache: string;
  shard: string;
  provider: string;
  fallbackReasons: string[];
  /** `int8` only when the quantised backbone ran; with --int8 and `int8Fallback` set, FP32 ran instead. */
  precision: Backbone['precision'];
  int8: { file: string; calibrationHash: string; reused: boolean; qlinearConv: number; qlinearAdd: number } | null;
  int8Fallback: string | null;
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
  /** Images of this dataset whose failure from an earlier run is still in the ledger (not retried). */
  ledgerFailed: number;
  exitCode: number;
}

/** Options after defaults and validation: what the steps below work with. */
interface Resolved extends Omit<ExtractOptions, 'preset' | 'shard' | 'log'> {
  preset: Preset;
  policy: ImagePolicy;
  shard: Shard | undefined;
  dataset: DatasetOptions;
  log: (line: string) => void;
  /** The calibration settings the caller gave (not defaulted): only these can conflict with a cache's calibration. */
  calibrationGiven: Partial<Pick<ExtractOptions, 'calibrate' | 'calibrationRanges' | 'calibrationPercentile'>>;
}

function resolveOptions(given: Partial<ExtractOptions> & { data: string }): Resolved {
  const o: ExtractOptions = withDefaults(DEFAULT_EXTRACT_OPTIONS, given);
  const shard = typeof o.shard === 'string' ? parseShard(o.shard) : o.shard;
  const resolved = {
    ...o,
    seed: nonNegativeInteger('seed', o.seed),
    threads: threadCount(o.threads),
    batchSize: positiveInteger('batchSize', o.batchSize),
    calibrate: positiveInteger('calibrate', o.calibrate),
    calibrationRanges: parseChoice('calibrationRanges', o.calibrationRanges, RANGE_METHODS),
    partRows: positiveInteger('partRows', o.partRows),
    preset: getPreset(o.preset),
    policy: {
      exif: parseChoice('exif', o.exif, EXIF_POLICIES),
      icc: parseChoice('icc', o.icc, ICC_POLICIES),
      maxPixels: maxPixelsLimit(o.maxPixels),
    },
    shard,
    log: o.log ?? (() => {}),
    calibrationGiven: {
      calibrate: given.calibrate,
      calibrationRanges: given.calibrationRanges,
      calibrationPercentile: given.calibrationPercentile,
    },
  };
  if (o.valFraction !== undefined) numberIn('valFraction', o.valFraction, 0, 1, true);
  parseDevice(o.device);
  return {
    ...resolved,
    dataset: {
      data: o.data,
      split: o.split,
      labels: o.labels,
      images: o.images,
      valFraction: o.valFraction,
      seed: resolved.seed,
      shard,
      followSymlinks: o.followSymlinks,
      fetch: o.fetch,
      log: resolved.log,
    },
  };
}

/**
 * Runs the backbone over one split of a dataset and caches the tapped features. Re-running is incremental and
 * resumes a killed run; the result says what was extracted, what was unchanged or removed, and where time went.
 *
 * @example
 * const r = await extract({ data: 'hymenoptera_data', split: 'train', model: 'models/resnet50.onnx' });
 * console.log(`${r.extracted} images → ${r.cache}/${r.split} (${r.dim}-d)`);
 */
export async function extract(options: Partial<ExtractOptions> & { data: string }): Promise<ExtractResult> {
  const started = performance.now();
  const o = resolveOptions(options);
  const dataset = await openDataset(o.dataset);
  try {
    // The cache keeps the split folder's own name (`--split train` may read a dataset's `training`: split-names.ts).
    return await extractDataset(dataset, dataset.split === o.split ? o : { ...o, split: dataset.split }, started);
  } finally {
    await dataset.source.close?.();
  }
}

async function extractDataset(dataset: Dataset, o: Resolved, started: number): Promise<ExtractResult> {
  requireImages(dataset, o);
  const existing = o.int8 ? await readManifest(o.cache) : null;
  const backbone = await openBackbone(o.model, {
    tap: o.tap,
    device: parseDevice(o.device),
    threads: o.threads,
    fp16: o.fp16,
    int8: int8Request(o, dataset, existing),
    log: o.log,
  });
  try {
    for (const reason of backbone.fallbackReasons) o.log(`device: not using ${reason}`);
    requirePresetFits(backbone, o);
    const manifest = await ensureManifest(o.cache, manifestFor(o, backbone, dataset.classes));
    const writer = await SplitWriter.open({
      cache: o.cache,
      split: o.split,
      shard: o.shard,
      dim: backbone.dim,
      partRows: o.partRows,
      log: o.log,
      provenance: {
        ...partProvenance(manifest),
        classes: dataset.classes,
        provider: backbone.provider,
        dataRoot: dataset.root,
        layout: dataset.layout,
      },
    });
    try {
      return await extractInto(writer, backbone, dataset, o, started);
    } finally {
      await writer.close();
    }
  } finally {
    await backbone.close();
  }
}

/** What each part records of the manifest: the feature identity, without the calibration's bulky record. */
function partProvenance(manifest: CacheManifest): Omit<CacheManifest, 'int8Calibration'> {
  const identity: Partial<CacheManifest> = { ...manifest };
  delete identity.int8Calibration;
  return identity as CacheManifest;
}

/**
 * The calibration a cache already keeps, for every later run into it: a fresh one would be drawn from the data as it
 * is now, so adding images would change the model and refuse the cache. A calibration setting given that differs
 * from the kept one is refused (it asks for another calibration, i.e. another cache).
 */
function keptCalibration(o: Resolved, manifest: CacheManifest | null): KeptCalibration | undefined {
  const kept = manifest?.precision === 'int8' ? manifest.int8Calibration : undefined;
  if (!kept) return undefined;
  const c = kept.calibration;
  const recorded: [keyof Resolved['calibrationGiven'], string | number | null | undefined][] = [
    ['calibrate', c.requested],
    ['calibrationRanges', c.method],
    ['calibrationPercentile', c.method === 'percentile' ? c.percentile : undefined],
  ];
  for (const [option, value] of recorded) {
    const given = o.calibrationGiven[option];
    if (given === undefined || value === undefined || value === null || given === value) continue;
    throw new FeatcacheError(
      `${optionName(option)} ${given}: the cache ${o.cache} keeps the int8 calibration it was made with (${optionName(option)} ${String(value)}); drop the flag or pass that value, or extract into a new ${optionName('cache')} to recalibrate`,
    );
  }
  return { provenance: kept, where: `${optionName('cache')} ${o.cache}` };
}

/**
 * Calibration images come from the train split when the data has one (else from this split), never from one shard:
 * every split and shard of a cache must run the same int8 model, or their features would not be comparable. A cache
 * that already has a calibration keeps it; one made before featcache recorded it names its model by hash.
 */
function int8Request(o: Resolved, dataset: Dataset, manifest: CacheManifest | null) {
  if (!o.int8) return undefined;
  const kept = keptCalibration(o, manifest);
  const legacyHash = manifest?.precision === 'int8' && !kept ? manifest.calibrationHash : undefined;
  const calibration = async () => {
    const whole = await openDataset({ ...o.dataset, split: 'train', shard: undefined }).catch(() => null);
    const sample =
      whole && whole.items.length > 0
        ? whole
        : o.shard
          ? await openDataset({ ...o.dataset, shard: undefined })
          : dataset;
    return datasetCalibrationSource(sample, { count: o.calibrate, seed: o.seed, preset: o.preset, policy: o.policy });
  };
  return {
    kept,
    calibrationHash: legacyHash,
    calibration,
    options: {
      calibrate: o.calibrate,
      calibrationRanges: o.calibrationRanges,
      calibrationPercentile: o.calibrationPercentile,
      seed: o.seed,
      int8Dir: o.int8Dir,
    },
  };
}

function requireImages(dataset: Dataset, o: Resolved): void {
  if (dataset.items.length > 0) return;
  const first = dataset.skipped[0];
  const why = first ? ` (${dataset.skipped.length} files skipped, e.g. ${first.path}: ${first.reason})` : '';
  const shard = o.shard ? ` in shard ${o.shard.index}/${o.shard.count}` : '';
  throw new FeatcacheError(`${optionName('data')} ${o.data}: no images found for split "${o.split}"${shard}${why}`);
}

function requirePresetFits(backbone: Backbone, o: Resolved): void {
  const expected = backbone.input.height;
  if (expected === null || expected === o.preset.crop) return;
  throw new FeatcacheError(
    `${optionName('preset')} ${o.preset.name}: crops ${o.preset.crop}×${o.preset.crop} but ${optionName('model')} ${o.model} takes ` +
      `${expected}×${backbone.input.width}; choose a preset with that crop`,
  );
}

function manifestFor(o: Resolved, backbone: Backbone, classes: string[]): CacheManifest {
  return {
    format: CACHE_FORMAT,
    modelFile: backbone.file,
    modelSha256: backbone.sha256,
    tappedTensor: backbone.tap.tensor,
    tap: { ...backbone.tap },
    preset: { ...o.preset },
    exif: o.policy.exif,
    icc: o.policy.icc,
    precision: backbone.precision,
    ...(backbone.int8
      ? {
          calibrationHash: backbone.int8.calibrationHash,
          int8Model: backbone.int8.file,
          int8Calibration: backbone.int8.provenance,
        }
      : {}),
    dim: backbone.dim,
    classes,
    createdAt: new Date().toISOString(),
    versions: toolVersions(),
  };
}

/** SIGINT/SIGTERM end the run after the batch in flight, which is then committed: nothing is lost or half-written. */
function interruptFlag(): { readonly raised: boolean; dispose(): void } {
  const flag = { raised: false };
  const raise = () => {
    flag.raised = true;
  };
  process.once('SIGINT', raise);
  process.once('SIGTERM', raise);
  return {
    get raised() {
      return flag.raised;
    },
    dispose() {
      process.off('SIGINT', raise);
      process.off('SIGTERM', raise);
    },
  };
}

async function extractInto(
  writer: SplitWriter,
  backbone: Backbone,
  dataset: Dataset,
  o: Resolved,
  started: number,
): Promise<ExtractResult> {
  const interrupt = interruptFlag();
  try {
    const plan = await writer.plan(dataset.items, (item) => dataset.source.stamp(item), o.retryFailed);
    dataset.source.prefetch?.(plan.todo);
    const timings: ExtractTimings = {
      wallS: 0,
      decodeWaitS: 0,
      decodeBusyS: 0,
      inferS: 0,
      writeS: 0,
      setupS: (performance.now() - started) / 1000,
    };
    // Images that failed in an earlier run and are not retried stay failures: a re-run must not say all is well.
    const todo = new Set(plan.todo.map((i) => i.path));
    const ledgerFailed = dataset.items.filter(
      (i) => !todo.has(i.path) && writer.latest.get(i.path)?.kind === 'failure',
    ).length;
    const batchSize = cappedBatchSize(o);
    const progress = progressBar(`extract ${o.split}`, plan.todo.length, o.progress);
    const failures: Failure[] = [];
    let extracted = 0;
    const steady = steadyClock();
    const steps = pipelined(chunk(plan.todo, batchSize), (items) => decodeItems(items, dataset, backbone, o));
    for await (const { batch, waitS } of steps) {
      timings.decodeWaitS += waitS;
      timings.decodeBusyS += batch.busyS;
      const outcome = toRecords(batch, dataset.classes);
      if (o.strict && outcome.failures.length > 0) throw strictFailure(outcome.failures[0]!, dataset);
      const inferStarted = performance.now();
      const computed =
        outcome.rows.length > 0
          ? await backbone.extract(batch.pixels, outcome.rows.length, o.preset.crop)
          : new Float32Array();
      timings.inferS += (performance.now() - inferStarted) / 1000;
      const { rows, features, failures: nonFinite } = withoutNonFinite(outcome.rows, computed);
      outcome.rows = rows;
      outcome.failures.push(...nonFinite);
      if (o.strict && nonFinite.length > 0) throw strictFailure(nonFinite[0]!, dataset);
      await writer.add(outcome.rows, features, outcome.failures);
      failures.push(...outcome.failures);
      extracted += outcome.rows.length;
      steady.batchDone(outcome.rows.length + outcome.failures.length);
      progress.increment(outcome.rows.length + outcome.failures.length);
      if (interrupt.raised) break;
    }
    // Removals are only known once the whole dataset has been seen.
    await writer.finish(interrupt.raised ? [] : plan.removed);
    progress.stop();
    timings.writeS = writer.writeS;
    timings.wallS = (performance.now() - started) / 1000;
    const steadyRate = steady.rate();
    if (steadyRate) timings.steady = steadyRate;
    return {
      split: o.split,
      cache: o.cache,
      shard: shardLabel(o.shard),
      provider: backbone.provider,
      fallbackReasons: backbone.fallbackReasons,
      precision: backbone.precision,
      int8Fallback: backbone.int8Fallback,
      int8: backbone.int8 && {
        file: backbone.int8.file,
        calibrationHash: backbone.int8.calibrationHash,
        reused: backbone.int8.reused,
        qlinearConv: backbone.int8.fusion.qlinearConv,
        qlinearAdd: backbone.int8.fusion.qlinearAdd,
      },
      dim: backbone.dim,
      dataset: dataset.items.length,
      extracted,
      unchanged: plan.unchanged,
      failed: failures.length,
      removed: interrupt.raised ? 0 : plan.removed.length,
      skipped: dataset.skipped,
      failures,
      imagesPerSecond: (extracted + failures.length) / Math.max(timings.wallS - timings.setupS, 1e-9),
      timings,
      bottleneck: bottleneckOf(timings),
      interrupted: interrupt.raised,
      ledgerFailed,
      exitCode: interrupt.raised
        ? ExitCode.failed
        : failures.length + ledgerFailed > 0
          ? ExitCode.partial
          : ExitCode.ok,
    };
  } finally {
    interrupt.dispose();
  }
}

/** Images and time from the end of the first batch to the end of the last: extract's steady-state rate. */
function steadyClock() {
  let first: number | undefined;
  let last = 0;
  let images = 0;
  return {
    batchDone(count: number): void {
      const now = performance.now();
      if (first === undefined) first = now;
      else images += count;
      last = now;
    },
    rate(): ExtractTimings['steady'] {
      if (first === undefined || images === 0) return undefined;
      const seconds = (last - first) / 1000;
      return { images, seconds, imagesPerSecond: images / Math.max(seconds, 1e-9) };
    },
  };
}

function cappedBatchSize(o: Resolved): number {
  const cap = maxBatchSize(o.preset);
  if (o.batchSize <= cap) return o.batchSize;
  o.log(`extract: ${optionName('batchSize')} ${o.batchSize} capped to ${cap} (a batch's pixels stay under 256 MiB)`);
  return cap;
}

function chunk<T>(items: T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

/**
 * Yields each batch's decoded result while the next one is already decoding: the overlap that hides decoding
 * behind inference. `waitS` is how long the consumer waited, i.e. decoding that was not hidden.
 */
async function* pipelined<T, R>(
  batches: T[],
  start: (batch: T) => Promise<R>,
): AsyncGenerator<{ batch: R; waitS: number }> {
  let next = batches.length > 0 ? start(batches[0]!) : null;
  try {
    for (let b = 0; next; b++) {
      const waitStarted = performance.now();
      const batch = await next;
      const waitS = (performance.now() - waitStarted) / 1000;
      next = b + 1 < batches.length ? start(batches[b + 1]!) : null;
      yield { batch, waitS };
    }
  } finally {
    await next?.catch(() => {});
  }
}

function decodeItems(
  items: Item[],
  dataset: Dataset,
  backbone: Backbone,
  o: Resolved,
): Promise<DecodedBatch<Item, HashedStamp>> {
  // The bytes' hash is recorded with each row: exact duplicates are then found without reading images again.
  const read = async (item: Item) => {
    const { bytes, stamp } = await dataset.source.read(item);
    return { bytes, stamp: { ...stamp, contentSha256: sha256Bytes(bytes) } };
  };
  return decodeBatch(items, read, {
    preset: o.preset,
    policy: o.policy,
    layout: backbone.input.layout,
  });
}

type HashedStamp = Stamp & { contentSha256?: string };

function toRecords(batch: DecodedBatch<Item, HashedStamp>, classes: string[]): { rows: Row[]; failures: Failure[] } {
  return {
    rows: batch.ok.map(({ item, stamp }) => ({
      path: item.path,
      label: item.label,
      labelName: item.label === null ? null : (classes[item.label] ?? null),
      size: stamp.size,
      mtimeMs: stamp.mtimeMs,
      contentSha256: stamp.contentSha256 ?? null,
    })),
    failures: batch.failed.map((f) => ({
      path: f.item.path,
      stage: f.stage,
      message: f.message,
      ...(f.status === undefined ? {} : { status: f.status }),
      size: f.stamp?.size ?? 0,
      mtimeMs: f.stamp?.mtimeMs ?? 0,
    })),
  };
}

/**
 * Rows whose features hold NaN or ±Infinity (a backbone that overflows, or divides by zero on some images) are that
 * image's failure, in the ledger, never a cached row: every later stage would turn them into NaN heads or answers.
 */
export function withoutNonFinite(
  rows: Row[],
  features: Float32Array,
): { rows: Row[]; features: Float32Array; failures: Failure[] } {
  if (features.every(Number.isFinite)) return { rows, features, failures: [] };
  const dim = features.length / rows.length;
  const kept: number[] = [];
  const failures: Failure[] = [];
  rows.forEach((row, r) => {
    if (features.subarray(r * dim, (r + 1) * dim).every(Number.isFinite)) kept.push(r);
    else
      failures.push({
        path: row.path,
        stage: 'infer',
        message: 'the backbone gave non-finite features (NaN or ±Infinity) for this image',
        size: row.size,
        mtimeMs: row.mtimeMs,
      });
  });
  const out = new Float32Array(kept.length * dim);
  kept.forEach((r, k) => out.set(features.subarray(r * dim, (r + 1) * dim), k * dim));
  return { rows: kept.map((r) => rows[r]!), features: out, failures };
}

function strictFailure(failure: Failure, dataset: Dataset): FeatcacheError {
  return new FeatcacheError(
    `${dataset.source.locate({ path: failure.path, label: null })}: ${failure.stage} failed (${failure.message}); ${optionName('strict')} stops at the first unusable image`,
    ExitCode.failed,
  );
}

function bottleneckOf(t: ExtractTimings): ExtractResult['bottleneck'] {
  const exposed = { decode: t.decodeWaitS, inference: t.inferS, write: t.writeS };
  return Object.entries(exposed).sort((a, b) => b[1] - a[1])[0]![0] as ExtractResult['bottleneck'];
}
