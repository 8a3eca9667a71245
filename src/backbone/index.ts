/** The backbone stage: an ONNX model file in, a function from preprocessed pixels to tapped features out. */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { FeatcacheError } from '../errors.js';
import { sha256Bytes } from '../util/fsx.js';
import { toFloat16 } from './fp16.js';
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
}

export interface Backbone {
  file: string;
  sha256: string;
  tap: TapPoint;
  precision: 'fp32' | 'fp16';
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
  const tapped = encodeModel(options.fp16 ? toFloat16(tappedGraph) : tappedGraph);
  const { worker, request } = sessionWorker();
  const probeSize = { height: input.height ?? 224, width: input.width ?? input.height ?? 224 };
  let opened: WorkerReply;
  try {
    opened = await request({ key: 'open', type: 'open', model: tapped, settings: { device: options.device, threads: options.threads }, layout: input, output: FEATURE_OUTPUT, probeSize }, [tapped.buffer as ArrayBuffer]);
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
    precision: options.fp16 ? 'fp16' : 'fp32',
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
export type { DeviceSpec } from './session.js';
