/**
 * `--int8`: the quantised backbone is built once per (model, tap, calibration images, recipe), saved in featcache's
 * cache folder under the model's sha256 (never beside the user's model) with its calibration provenance, and reused
 * while that provenance matches. Features it computes are identified by precision `int8` plus the calibration hash,
 * never mixed with FP32 ones. A feature cache keeps the calibration it was made with (KeptCalibration): images added
 * later change the sample a fresh calibration would draw, but not the cache's model.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, nonNegativeInteger, optionName, parseChoice, positiveInteger, ExitCode } from '../errors.js';
import { sha256Bytes, writeBytesAtomic } from '../util/fsx.js';
import { toolVersions } from '../version.js';
import type { CalibrationImage, CalibrationSource } from './calibration-source.js';
import type { FusionReport } from './fusion.js';
import { DEFAULT_INT8_OPTIONS, INT8_RECIPE, RANGE_METHODS, checkRangeOptions } from './int8-defaults.js';
import { cachedForRuntime, featcacheCacheDir, modelDir, modelSha256 } from './model-cache.js';
import type { InputLayout } from './session.js';
import type { TapPoint } from './tap.js';
// The quantiser, the calibrator and the fusion check (protobuf code, onnxruntime) load only when a model is built or
// judged: a run that reuses a saved int8 model reads two small JSON files and a cached hash.
import type { Int8Options, QuantizeReport } from './quantize.js';

export interface Int8Provenance {
  recipe: string;
  calibrationHash: string;
  source: { file: string; sha256: string; tappedTensor: string };
  calibration: {
    method: Int8Options['calibrationRanges'];
    percentile: number | null;
    seed: number;
    /** Images actually used (fewer than `requested` when fewer decode). */
    count: number;
    /** `--calibrate` as given; absent in models saved before featcache recorded it. */
    requested?: number | undefined;
    images: CalibrationImage[];
    preprocessing: Record<string, unknown>;
  };
  ranges: QuantizeReport['ranges'];
  /** sha256 of the saved quantised model: a file that no longer matches is rebuilt, never trusted. */
  sha256: string;
  createdAt: string;
  versions: Record<string, string>;
}

export interface Int8Model {
  file: string;
  sha256: string;
  calibrationHash: string;
  provenance: Int8Provenance;
  fusion: FusionReport;
  /** True when a saved model with matching provenance was used instead of quantising again. */
  reused: boolean;
}

export interface EnsureInt8Options extends Int8Options {
  /** Where the quantised model and its provenance are saved; default: featcache's cache folder, by model sha256. */
  int8Dir?: string | undefined;
  /** featcache's cache folder (default: FEATCACHE_CACHE_DIR, $XDG_CACHE_HOME/featcache or ~/.cache/featcache). */
  cacheDir?: string | undefined;
  threads?: number | undefined;
  log?: ((line: string) => void) | undefined;
}

export function checkInt8Options(options: Int8Options): void {
  positiveInteger('calibrate', options.calibrate);
  parseChoice('calibrationRanges', options.calibrationRanges, RANGE_METHODS);
  checkRangeOptions({ method: options.calibrationRanges, percentile: options.calibrationPercentile });
  positiveInteger('calibrationBatch', options.calibrationBatch);
  nonNegativeInteger('seed', options.seed);
}

/** What makes two int8 models interchangeable: recipe, source model and tap, range method, calibration pixels. */
export function calibrationHash(
  source: { sha256: string; tappedTensor: string },
  calibration: CalibrationSource,
  options: Int8Options,
): string {
  return sha256Bytes(
    Buffer.from(
      JSON.stringify({
        recipe: INT8_RECIPE,
        model: source.sha256,
        tap: source.tappedTensor,
        method: options.calibrationRanges,
        percentile: options.calibrationRanges === 'percentile' ? options.calibrationPercentile : null,
        images: calibration.images.map((i) => i.sha256),
        preprocessing: calibration.preprocessing,
      }),
    ),
  );
}

type Int8Source = { file: string; sha256: string };

/** Where the int8 copy of `source` lives: `dir` when given, else the cache folder under the model's sha256. */
export function int8Paths(
  source: Int8Source,
  hash: string,
  dir?: string,
  cacheDir: string = featcacheCacheDir(),
): { model: string; provenance: string } {
  const base = path.basename(source.file).replace(/\.onnx$/i, '');
  const model = dir
    ? path.join(dir, `${base}.int8-${hash.slice(0, 16)}.onnx`)
    : path.join(modelDir(cacheDir, source.sha256), `int8-${hash.slice(0, 16)}.onnx`);
  return { model, provenance: `${model}.json` };
}

/** Where featcache before 0.2 saved int8 models (beside the original): read, never written. */
const legacyInt8Paths = (source: Int8Source, hash: string) => int8Paths(source, hash, path.dirname(source.file));

/**
 * A saved int8 model: in `dir` when given, else (or then) in the cache folder, else in the legacy place beside the
 * model; with the paths it was found at. Each must name this source model in its provenance.
 */
async function readSavedAnywhere(
  source: Int8Source,
  hash: string,
  dir: string | undefined,
  cacheDir: string | undefined,
): Promise<{ provenance: Int8Provenance; paths: { model: string; provenance: string } } | null> {
  const candidates = [
    ...(dir ? [int8Paths(source, hash, dir, cacheDir)] : []),
    int8Paths(source, hash, undefined, cacheDir),
    legacyInt8Paths(source, hash),
  ];
  for (const paths of candidates) {
    const found = await readSaved(paths, hash, cacheDir);
    if (found && found.provenance.source.sha256 === source.sha256) return { ...found, paths };
  }
  return null;
}

/** Whether the quantised graph fuses on this CPU and onnxruntime: an optimisation pass, so judged once and kept. */
function fusionOf(paths: { model: string }, sha256: string, bytes?: Uint8Array): Promise<FusionReport> {
  return cachedForRuntime(`${paths.model}.${sha256.slice(0, 16)}.fusion.json`, async () => {
    const { verifyFusion } = await import('./fusion.js');
    return verifyFusion(bytes ?? (await fs.readFile(paths.model)));
  });
}

/**
 * A saved model whose provenance names this calibration and whose file hashes to the sha256 it records. The hash is
 * featcache's cached one while the file's size, mtime, ctime and inode are unchanged (model-cache.ts), so a reused
 * model is not read and hashed again on every start; a replaced or rewritten file is.
 */
async function readSaved(
  paths: { model: string; provenance: string },
  hash: string,
  cacheDir: string | undefined,
): Promise<{ provenance: Int8Provenance } | null> {
  try {
    const provenance = JSON.parse(await fs.readFile(paths.provenance, 'utf8')) as Int8Provenance;
    if (provenance.calibrationHash !== hash || provenance.recipe !== INT8_RECIPE) return null;
    const { sha256 } = await modelSha256(paths.model, cacheDir ?? featcacheCacheDir());
    return sha256 === provenance.sha256 ? { provenance } : null;
  } catch {
    return null;
  }
}

async function saveInt8(
  paths: { model: string; provenance: string },
  bytes: Uint8Array,
  provenance: Int8Provenance,
): Promise<void> {
  try {
    await fs.mkdir(path.dirname(paths.model), { recursive: true });
    // Model first: a provenance file only ever describes a model that is fully on disk.
    await writeBytesAtomic(paths.model, bytes);
    await writeBytesAtomic(paths.provenance, `${JSON.stringify(provenance, null, 2)}\n`);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new FeatcacheError(
      `${optionName('int8')}: cannot save the quantised model as ${paths.model} (${code}); pass a writable directory for it with ${optionName('int8Dir')}`,
      ExitCode.failed,
    );
  }
}

/**
 * The int8 model for a tapped FP32 backbone, quantised on first use and reused after. `fusion.fused === false`
 * (with `fusion.reason`) means: do not use it, run FP32 — the caller decides and tells the user.
 * An already-quantised source model is a FeatcacheError; a model outside the recipe comes back unfused with the reason.
 */
export async function ensureInt8Model(
  source: { file: string; sha256: string; tap: TapPoint; tapped: () => Promise<Uint8Array>; input: InputLayout },
  calibration: CalibrationSource,
  options: Partial<EnsureInt8Options> = {},
): Promise<Int8Model | { unsupported: string }> {
  const settings: EnsureInt8Options = { ...DEFAULT_INT8_OPTIONS, ...options };
  checkInt8Options(settings);
  const log = settings.log ?? (() => {});
  const identity = { sha256: source.sha256, tappedTensor: source.tap.tensor };
  let hash = calibrationHash(identity, calibration, settings);
  let saved = await readSavedAnywhere(source, hash, settings.int8Dir, settings.cacheDir);
  if (!saved && calibration.decoded) {
    // The images were named before decoding; the ones calibration can use may differ, and so may the model.
    calibration = await calibration.decoded();
    const decodedHash = calibrationHash(identity, calibration, settings);
    if (decodedHash !== hash) saved = await readSavedAnywhere(source, decodedHash, settings.int8Dir, settings.cacheDir);
    hash = decodedHash;
  }
  let paths = int8Paths(source, hash, settings.int8Dir, settings.cacheDir);
  const reused = saved !== null;
  let built: Uint8Array | undefined;
  if (saved) paths = saved.paths;
  else {
    const { Int8Unsupported, quantizeModel } = await import('./quantize.js');
    let quantised: { bytes: Uint8Array; report: QuantizeReport };
    try {
      quantised = await quantizeModel(
        await source.tapped(),
        () => calibration.batches(source.input.layout, settings.calibrationBatch),
        {
          ...settings,
          what: `${optionName('model')} ${source.file}`,
          log: (line) => log(`${line} of ${path.basename(source.file)} on ${calibration.images.length} images`),
        },
      );
    } catch (error) {
      if (error instanceof Int8Unsupported) return { unsupported: error.reason };
      throw error;
    }
    const provenance: Int8Provenance = {
      recipe: INT8_RECIPE,
      calibrationHash: hash,
      source: { file: path.resolve(source.file), sha256: source.sha256, tappedTensor: source.tap.tensor },
      calibration: {
        method: settings.calibrationRanges,
        percentile: settings.calibrationRanges === 'percentile' ? settings.calibrationPercentile : null,
        seed: settings.seed,
        count: calibration.images.length,
        requested: settings.calibrate,
        images: calibration.images,
        preprocessing: calibration.preprocessing,
      },
      ranges: quantised.report.ranges,
      sha256: sha256Bytes(quantised.bytes),
      createdAt: new Date().toISOString(),
      versions: toolVersions(),
    };
    await saveInt8(paths, quantised.bytes, provenance);
    saved = { provenance, paths };
    built = quantised.bytes;
  }
  const fusion = await fusionOf(paths, saved.provenance.sha256, built);
  return {
    file: paths.model,
    sha256: saved.provenance.sha256,
    calibrationHash: hash,
    provenance: saved.provenance,
    fusion,
    reused,
  };
}

/** A saved int8 model found by its calibration hash (what a cache or a head records), or null. */
export async function savedInt8Model(
  source: Int8Source,
  hash: string,
  dir?: string,
  cacheDir?: string,
): Promise<Int8Model | null> {
  const saved = await readSavedAnywhere(source, hash, dir, cacheDir);
  if (!saved) return null;
  const fusion = await fusionOf(saved.paths, saved.provenance.sha256);
  return {
    file: saved.paths.model,
    sha256: saved.provenance.sha256,
    calibrationHash: hash,
    provenance: saved.provenance,
    fusion,
    reused: true,
  };
}

/**
 * The calibration a feature cache keeps (its manifest records it): every later run into that cache uses it, however
 * the data grows, and rebuilds its int8 model from the recorded ranges if the saved one is gone.
 */
export interface KeptCalibration {
  provenance: Int8Provenance;
  /** The cache, for messages (e.g. `--cache features`). */
  where: string;
}

export interface Int8Request {
  /** Use the int8 model calibrated as this (a head records it); needs no images. */
  calibrationHash?: string | undefined;
  /** A feature cache's own calibration: used as it is, never recalibrated. */
  kept?: KeptCalibration | undefined;
  /** Calibration images; only built when no saved model can be used. */
  calibration?: (() => Promise<CalibrationSource>) | undefined;
  options?: Partial<EnsureInt8Options> | undefined;
  /**
   * false: use the int8 model even where onnxruntime does not fuse it (slower, but the same features) — for a head
   * trained on int8 features, which FP32 features would not fit. Default true: unfused means FP32.
   */
  requireFused?: boolean | undefined;
}

/** The int8 model a request asks for: by calibration hash when given, else calibrated (or reused) from images. */
export async function resolveInt8(
  source: { file: string; sha256: string; tap: TapPoint; tapped: () => Promise<Uint8Array>; input: InputLayout },
  request: Int8Request,
): Promise<Int8Model | { unsupported: string }> {
  const dir = request.options?.int8Dir;
  const cacheDir = request.options?.cacheDir;
  if (request.kept) return keptInt8Model(source, request.kept, dir, cacheDir);
  if (request.calibrationHash) {
    const saved = await savedInt8Model(source, request.calibrationHash, dir, cacheDir);
    if (saved && saved.provenance.source.sha256 === source.sha256) return saved;
    if (!request.calibration) {
      // A head records the file it was trained with; when that is in the cache folder, name it as the cache does.
      const inCache = int8Paths(source, request.calibrationHash, undefined, cacheDir).model;
      const expected =
        dir && path.resolve(dir) !== path.dirname(inCache)
          ? int8Paths(source, request.calibrationHash, dir, cacheDir).model
          : inCache;
      throw new FeatcacheError(
        `${optionName('int8')}: the int8 model calibrated as ${request.calibrationHash.slice(0, 12)}… is missing or damaged (expected ${expected}); re-run 'featcache extract --int8' on the training data to rebuild it`,
        ExitCode.failed,
      );
    }
  }
  if (!request.calibration)
    throw new FeatcacheError(`${optionName('int8')}: no calibration images and no saved int8 model to use`);
  return ensureInt8Model(source, await request.calibration(), request.options);
}

/**
 * A cache's kept calibration as an int8 model: the saved one when it is intact, else rebuilt from the recorded uint8
 * parameters and accepted only if it hashes to the recorded sha256 (the features of the cache's rows came from it).
 */
async function keptInt8Model(
  source: { file: string; sha256: string; tap: TapPoint; tapped: () => Promise<Uint8Array> },
  kept: KeptCalibration,
  dir: string | undefined,
  cacheDir: string | undefined,
): Promise<Int8Model | { unsupported: string }> {
  const p = kept.provenance;
  if (p.source.sha256 !== source.sha256 || p.source.tappedTensor !== source.tap.tensor)
    throw new FeatcacheError(
      `${kept.where}: its int8 calibration was made for model sha256 ${p.source.sha256.slice(0, 12)}… tapped at ${p.source.tappedTensor}, not ${optionName('model')} ${source.file} (sha256 ${source.sha256.slice(0, 12)}… tapped at ${source.tap.tensor}); use another cache directory for this model`,
    );
  const saved = await savedInt8Model(source, p.calibrationHash, dir, cacheDir);
  if (saved && saved.provenance.sha256 === p.sha256) return saved;
  const { Int8Unsupported, quantizeWithParams } = await import('./quantize.js');
  let bytes: Uint8Array;
  try {
    bytes = quantizeWithParams(await source.tapped(), p.ranges, `${optionName('model')} ${source.file}`);
  } catch (error) {
    if (error instanceof Int8Unsupported) return { unsupported: error.reason };
    throw error;
  }
  const sha256 = sha256Bytes(bytes);
  if (sha256 !== p.sha256)
    throw new FeatcacheError(
      `${kept.where}: its int8 model (calibration ${p.calibrationHash.slice(0, 12)}…) is gone from featcache's cache folder, and rebuilding it from the ranges the cache recorded gives another model (sha256 ${sha256.slice(0, 12)}…, not ${p.sha256.slice(0, 12)}…: this featcache quantises differently); extract into a new ${optionName('cache')} to recalibrate`,
      ExitCode.failed,
    );
  const paths = int8Paths(source, p.calibrationHash, dir, cacheDir);
  await saveInt8(paths, bytes, p);
  const fusion = await fusionOf(paths, sha256, bytes);
  return { file: paths.model, sha256, calibrationHash: p.calibrationHash, provenance: p, fusion, reused: true };
}

export { type PrecisionIdentity, checkFeaturePrecision } from './precision.js';
