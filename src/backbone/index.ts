/** The backbone stage: an ONNX model file in, a function from preprocessed pixels to tapped features out. */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { FeatcacheError, optionName } from '../errors.js';
import { sha256Bytes } from '../util/fsx.js';
import { toFloat16 } from './fp16.js';
import { type Int8Model, type Int8Request, resolveInt8 } from './int8.js';
import { encodeModel, graphInputs, loadModel } from './graph.js';
import { type DeviceSpec, type InputLayout, inputLayout, sessionStackMb } from './session.js';
import { DEFAULT_TAP, FEATURE_OUTPUT, type TapPoint, resolveTap, tappedModel } from './tap.js';
import type { RequestKey, WorkerReply, WorkerRequest } from './worker.js';

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
  /** Features for `count` images laid out as `input` expects, each `size`×`size`. The pixel buffer is transferred. */
  extract(pixels: Float32Array, count: number, size: number): Promise<Float32Array>;
  close(): Promise<void>;
}

/** Talks to the session worker: replies are matched to requests by the key they echo. */
function sessionWorker() {
  const worker = new Worker(new URL('./worker.js', import.meta.url), { resourceLimits: { stackSizeMb: sessionStackMb() } });
  worker.unref();
  const pending = new Map<RequestKey, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void }>();
  const fail = (error: Error) => {
    for (const p of pending.values()) p.reject(error);
    pending.clear();
  };
  worker.on('message', (reply: WorkerReply) => {
    const waiter = pending.get(reply.key);
    pending.delete(reply.key);
    if (!waiter) return;
    if (reply.type === 'error') waiter.reject(new FeatcacheError(reply.message, reply.exitCode ?? 1));
    else waiter.resolve(reply);
  });
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`the onnxruntime worker exited (code ${code})`)));
  const request = (message: WorkerRequest, transfer: ArrayBuffer[] = []) =>
    new Promise<WorkerReply>((resolve, reject) => {
      pending.set(message.key, { resolve, reject });
      worker.ref();
      worker.postMessage(message, transfer);
    }).finally(() => {
      if (pending.size === 0) worker.unref();
    });
  return { worker, request };
}

export async function openBackbone(file: string, options: BackboneOptions): Promise<Backbone> {
  const { model, bytes } = await loadModel(file);
  const sha256 = sha256Bytes(bytes);
  if (options.expect && sha256 !== options.expect.sha256) {
    throw new FeatcacheError(`--model ${file}: sha256 ${sha256.slice(0, 12)}… is not ${options.expect.what} (${options.expect.sha256.slice(0, 12)}…); use that model or retrain the head`);
  }
  const graph = model.graph!;
  const inputs = graphInputs(graph);
  if (inputs.length !== 1) {
    throw new FeatcacheError(`--model ${file}: expected one image input, found ${inputs.length} (${inputs.map((i) => i.name).join(', ')})`);
  }
  const input = inputLayout(inputs[0]!.name, inputs[0]!.shape);
  const tap = resolveTap(graph, options.tap ?? DEFAULT_TAP);
  const tappedGraph = tappedModel(model, tap);
  let tapped = encodeModel(options.fp16 ? toFloat16(tappedGraph) : tappedGraph);
  let int8: Int8Model | null = null;
  let int8Fallback: string | null = null;
  let device = options.device;
  if (options.int8) {
    if (options.fp16) throw new FeatcacheError(`${optionName('int8')}: cannot be combined with ${optionName('fp16')} (int8 is for CPUs, fp16 for GPUs); choose one`);
    if (options.device.kind === 'cuda') throw new FeatcacheError(`${optionName('int8')}: the int8 backbone runs on the CPU; drop ${optionName('device')} cuda:${options.device.deviceId} or use ${optionName('fp16')} on a GPU`);
    const resolved = await resolveInt8({ file, sha256, tap, tapped, input }, { ...options.int8, options: { threads: options.threads, log: options.log, ...options.int8.options } });
    const reason = 'unsupported' in resolved ? resolved.unsupported : resolved.fusion.fused ? null : (resolved.fusion.reason ?? 'not fused');
    const usable = !('unsupported' in resolved) && (reason === null || options.int8.requireFused === false);
    if (usable) {
      if (reason !== null) options.log?.(`int8: ${reason}; running the int8 model unfused (slower) because int8 features were asked for`);
      int8 = resolved;
      // A copy: the worker takes ownership of the buffer it is sent.
      tapped = resolved.bytes.slice();
      device = { kind: 'cpu' };
    } else {
      int8Fallback = reason;
      options.log?.(`int8: not used — ${reason}; running FP32`);
    }
  }
  const { worker, request } = sessionWorker();
  const probeSize = { height: input.height ?? 224, width: input.width ?? input.height ?? 224 };
  let opened: WorkerReply;
  try {
    opened = await request({ key: 'open', type: 'open', model: tapped, settings: { device, threads: options.threads }, layout: input, output: FEATURE_OUTPUT, probeSize }, [tapped.buffer as ArrayBuffer]);
  } catch (error) {
    await worker.terminate();
    throw error;
  }
  if (opened.type !== 'opened') throw new Error('unexpected reply from the onnxruntime worker');
  let nextId = 0;
  return {
    file: path.resolve(file),
    sha256,
    tap,
    precision: int8 ? 'int8' : options.fp16 ? 'fp16' : 'fp32',
    int8,
    int8Fallback,
    input,
    provider: opened.provider,
    fallbackReasons: opened.fallbackReasons,
    dim: opened.dim,
    async extract(pixels, count, size) {
      const reply = await request({ key: nextId++, type: 'run', pixels, count, size }, [pixels.buffer as ArrayBuffer]);
      if (reply.type !== 'result') throw new Error('unexpected reply from the onnxruntime worker');
      return reply.features;
    },
    async close() {
      await request({ key: 'close', type: 'close' }).catch(() => {});
      await worker.terminate();
    },
  };
}

export { parseDevice } from './session.js';
export { DEFAULT_INT8_OPTIONS, type Int8Options } from './quantize.js';
export { type Int8Model, type Int8Request, type EnsureInt8Options, checkFeaturePrecision, ensureInt8Model, savedInt8Model } from './int8.js';
export { type CalibrationSource, datasetCalibrationSource, pixelCalibrationSource } from './calibration-source.js';
export type { DeviceSpec } from './session.js';
