/** The backbone stage: an ONNX model file in, a function from preprocessed pixels to tapped features out. */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, missingModel, optionName } from '../errors.js';
import type { DeviceSpec } from './device.js';
import { DEFAULT_TAP, FEATURE_OUTPUT } from './feature-output.js';
import type { Int8Model, Int8Request, resolveInt8 } from './int8.js';
import { featcacheCacheDir, modelSha256, optimisedModel, tappedModel as cachedTappedModel } from './model-cache.js';
import type { CpuOptimised, InputLayout } from './session.js';
import type { TapPoint } from './tap.js';
import { openWorkerSession } from './worker-client.js';

export interface BackboneOptions {
  tap?: string | undefined;
  device: DeviceSpec;
  threads: number;
  /** Run the backbone in float16 (GPUs); features are still returned as float32. */
  fp16?: boolean | undefined;
  /** Refuse the file unless its sha256 is this; `what` names what it must match, for the error. */
  expect?: { sha256: string; what: string } | undefined;
  /** Run a calibrated int8 copy of the backbone (CPU); falls back to FP32, with `int8Fallback` saying why. */
  int8?: Int8Request | undefined;
  log?: ((line: string) => void) | undefined;
  /**
   * Called once the session's worker thread has been started: work this thread does after it (predict loads
   * TensorFlow.js) then overlaps the session's creation instead of delaying it.
   */
  onWorkerStarted?: (() => void) | undefined;
  /**
   * featcache's cache folder for what is derived from the model (hash, tapped graph, onnxruntime's optimised graph,
   * int8 copies); default FEATCACHE_CACHE_DIR, else $XDG_CACHE_HOME/featcache or ~/.cache/featcache.
   */
  modelCache?: string | undefined;
}

/** Where a backbone's start-up time went, and what came from featcache's cache folder. */
export interface BackboneSetup {
  /** Seconds: model sha256 (or its cached value), tap surgery (or reading it back), int8 resolution, worker start,
   * session creation (graph optimisation, or loading the saved optimised graph), probe run. */
  hashS: number;
  tapS: number;
  int8S: number;
  workerS: number;
  sessionS: number;
  probeS: number;
  hashReused: boolean;
  tappedReused: boolean;
  /** 'loaded': onnxruntime's optimised graph came from the cache; 'saved': made now and kept; 'none': neither. */
  optimised: 'loaded' | 'saved' | 'none';
}

export interface Backbone {
  file: string;
  sha256: string;
  tap: TapPoint;
  precision: 'fp32' | 'fp16' | 'int8';
  /** The quantised model in use when precision is int8 (its calibration hash is part of the feature identity). */
  int8: Int8Model | null;
  /** Why --int8 was asked for but FP32 runs (unsupported ops, no fusion, no VNNI); null otherwise. */
  int8Fallback: string | null;
  input: InputLayout;
  provider: string;
  fallbackReasons: string[];
  dim: number;
  setup: BackboneSetup;
  /** Features for `count` images laid out as `input` expects, each `size`×`size`. The pixel buffer is transferred. */
  extract(pixels: Float32Array, count: number, size: number): Promise<Float32Array>;
  close(): Promise<void>;
}

/**
 * The tapped graph of a model, as bytes, with its tap point and input layout. Only on a miss of the cache folder: the
 * protobuf code (and onnxruntime, for the layout) load here, not on every start.
 */
async function tapModel(
  file: string,
  request: { tap: string; fp16: boolean },
): Promise<{ bytes: Uint8Array; tap: TapPoint; input: InputLayout }> {
  const [{ encodeModel, graphInputs, loadModel }, { resolveTap, tappedModel }, { toFloat16 }, { inputLayout }] =
    await Promise.all([import('./graph.js'), import('./tap.js'), import('./fp16.js'), import('./session.js')]);
  const { model } = await loadModel(file);
  const graph = model.graph!;
  const inputs = graphInputs(graph);
  if (inputs.length !== 1) {
    throw new FeatcacheError(
      `${optionName('model')} ${file}: expected one image input, found ${inputs.length} (${inputs.map((i) => i.name).join(', ')})`,
    );
  }
  const input = inputLayout(inputs[0]!.name, inputs[0]!.shape);
  const tap = resolveTap(graph, request.tap);
  const tappedGraph = tappedModel(model, tap);
  return { bytes: encodeModel(request.fp16 ? toFloat16(tappedGraph) : tappedGraph), tap, input };
}

const seconds = (since: number) => (performance.now() - since) / 1000;

/** The model file's sha256 (remembered in the model cache), refused when it is not the one `expect` names. */
async function identifyModel(
  file: string,
  cacheDir: string,
  expect: BackboneOptions['expect'],
): Promise<Awaited<ReturnType<typeof modelSha256>>> {
  const hashed = await modelSha256(file, cacheDir).catch((error: unknown) => {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw missingModel(file);
    if (code === 'EISDIR' || code === 'EACCES')
      throw new FeatcacheError(`${optionName('model')} ${file}: cannot read the model (${code}); give an ONNX file`);
    throw error;
  });
  if (expect && hashed.sha256 !== expect.sha256) {
    throw new FeatcacheError(
      `${optionName('model')} ${file}: sha256 ${hashed.sha256.slice(0, 12)}… is not ${expect.what} (${expect.sha256.slice(0, 12)}…); use that model or retrain the head`,
    );
  }
  return hashed;
}

export async function openBackbone(file: string, options: BackboneOptions): Promise<Backbone> {
  const cacheDir = options.modelCache ?? featcacheCacheDir();
  let mark = performance.now();
  const hashed = await identifyModel(file, cacheDir, options.expect);
  const sha256 = hashed.sha256;
  const hashS = seconds(mark);
  mark = performance.now();
  const request = { tap: options.tap ?? DEFAULT_TAP, fp16: options.fp16 === true };
  const tapped = await cachedTappedModel({ file, sha256 }, request, cacheDir, () => tapModel(file, request));
  const { tap, input } = tapped.record;
  const tapS = seconds(mark);
  mark = performance.now();
  const tappedBytes = async () => tapped.bytes ?? new Uint8Array(await fs.readFile(tapped.file!));
  const precision = await choosePrecision(options, { file, sha256, tap, tapped: tappedBytes, input });
  const int8S = seconds(mark);
  const probeSize = { height: input.height ?? 224, width: input.width ?? input.height ?? 224 };
  const plan = precision.variant ? await optimisedModel({ sha256, variant: precision.variant }, cacheDir) : null;
  const cpuOptimised: CpuOptimised | undefined =
    plan && plan.mode !== 'none' ? { mode: plan.mode, file: plan.file } : undefined;
  const model = precision.model ?? tapped.file ?? (await tappedBytes()).slice();
  const opening = openWorkerSession(
    model,
    { device: precision.device, threads: options.threads },
    input,
    FEATURE_OUTPUT,
    probeSize,
    // The int8 copy keeps the tapped graph's float output, so one remembered width serves both (no probe run).
    { cpuOptimised, dim: tapped.record.dim },
  );
  options.onWorkerStarted?.();
  const session = await opening;
  if (plan?.mode === 'save') {
    if (session.optimised === 'saved') await plan.commit();
    else await plan.discard();
  }
  if (tapped.record.dim !== session.dim) await tapped.rememberDim(session.dim);
  return {
    file: path.resolve(file),
    sha256,
    tap,
    precision: precision.int8 ? 'int8' : options.fp16 ? 'fp16' : 'fp32',
    int8: precision.int8,
    int8Fallback: precision.int8Fallback,
    input,
    provider: session.provider,
    fallbackReasons: session.fallbackReasons,
    dim: session.dim,
    setup: {
      hashS,
      tapS,
      int8S,
      workerS: session.timings.workerS,
      sessionS: session.timings.createS,
      probeS: session.timings.probeS,
      hashReused: hashed.reused,
      tappedReused: tapped.reused,
      optimised: session.optimised,
    },
    extract: (pixels, count, size) => session.run(pixels, count, size),
    close: () => session.close(),
  };
}

interface ChosenPrecision {
  /** The graph to run when not the tapped one: its calibrated int8 copy (a file). */
  model: string | Uint8Array | null;
  /** The name of the graph run, for its optimised copy in the cache (tapped-…, int8-…). */
  variant: string | null;
  device: DeviceSpec;
  int8: Int8Model | null;
  /** Why int8 was asked for but not used (the FP32 graph runs instead). */
  int8Fallback: string | null;
}

/**
 * With `int8`, the calibrated int8 copy of the tapped graph when it fuses (or when int8 features are required, e.g.
 * for a head trained on them); otherwise the tapped graph as it is, and why int8 was not used.
 */
async function choosePrecision(
  options: BackboneOptions,
  source: Parameters<typeof resolveInt8>[0],
): Promise<ChosenPrecision> {
  const tappedVariant = `tapped-${source.tap.tensor.replace(/[^\w.-]/g, '_').slice(0, 40)}${options.fp16 ? '-fp16' : ''}`;
  const plain: ChosenPrecision = {
    model: null,
    variant: tappedVariant,
    device: options.device,
    int8: null,
    int8Fallback: null,
  };
  if (!options.int8) return plain;
  if (options.fp16)
    throw new FeatcacheError(
      `${optionName('int8')}: cannot be combined with ${optionName('fp16')} (int8 is for CPUs, fp16 for GPUs); choose one`,
    );
  if (options.device.kind === 'cuda')
    throw new FeatcacheError(
      `${optionName('int8')}: the int8 backbone runs on the CPU; drop ${optionName('device')} cuda:${options.device.deviceId} or use ${optionName('fp16')} on a GPU`,
    );
  const { resolveInt8 } = await import('./int8.js');
  const resolved = await resolveInt8(source, {
    ...options.int8,
    options: { threads: options.threads, log: options.log, cacheDir: options.modelCache, ...options.int8.options },
  });
  const reason =
    'unsupported' in resolved
      ? resolved.unsupported
      : resolved.fusion.fused
        ? null
        : (resolved.fusion.reason ?? 'not fused');
  if ('unsupported' in resolved || (reason !== null && options.int8.requireFused !== false)) {
    options.log?.(`int8: not used — ${reason}; running FP32`);
    return { ...plain, int8Fallback: reason };
  }
  if (reason !== null)
    options.log?.(`int8: ${reason}; running the int8 model unfused (slower) because int8 features were asked for`);
  return {
    model: resolved.file,
    variant: `int8-${resolved.calibrationHash.slice(0, 16)}`,
    device: { kind: 'cpu' },
    int8: resolved,
    int8Fallback: null,
  };
}

// Values of the int8 and calibration modules are imported from them directly: re-exporting them here would load the
// protobuf code and the quantiser on every start.
export { parseDevice } from './device.js';
export { DEFAULT_INT8_OPTIONS } from './int8-defaults.js';
export type { Int8Options } from './quantize.js';
export type { Int8Model, Int8Request, KeptCalibration, EnsureInt8Options } from './int8.js';
export type { CalibrationSource } from './calibration-source.js';
export type { DeviceSpec } from './device.js';
