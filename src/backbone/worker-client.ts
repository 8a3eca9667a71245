/**
 * The main thread's side of the session worker (worker.ts): one onnxruntime session per worker thread, requests and
 * replies matched by key, pixels and features transferred rather than copied. Used by every stage that runs a graph
 * on images (the backbone, bundles), so all get the same stack sizing and error handling.
 */
import { Worker } from 'node:worker_threads';
import { ExitCode, FeatcacheError, namesOptionsAsFlags } from '../errors.js';
import { sessionStackMb } from './device.js';
import type { CpuOptimised, InputLayout, SessionSettings } from './session.js';
import type { RequestKey, WorkerReply, WorkerRequest } from './worker.js';

export interface WorkerSession {
  /** The execution provider that runs the graph, e.g. "cuda:0" or "cpu". */
  provider: string;
  fallbackReasons: string[];
  /** Width of the output per image, found by a probe run at open (or given, when known). */
  dim: number;
  /** Whether the CPU session came from a saved optimised graph ('loaded'), saved one, or neither. */
  optimised: 'loaded' | 'saved' | 'none';
  /** Seconds: worker start, session creation, probe run. */
  timings: { workerS: number; createS: number; probeS: number };
  /** Outputs for `count` images of `size`×`size`; the pixel buffer is transferred to the worker. */
  run(pixels: Float32Array, count: number, size: number): Promise<Float32Array>;
  close(): Promise<void>;
}

/** Talks to a session worker: replies find their caller by the key they echo; the thread keeps Node alive only while busy. */
function sessionWorker() {
  const worker = new Worker(new URL('./worker.js', import.meta.url), {
    resourceLimits: { stackSizeMb: sessionStackMb() },
    // Errors raised in the worker name options the way this thread does (flags on the command line).
    workerData: { flagNames: namesOptionsAsFlags() },
  });
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
    if (reply.type === 'error') waiter.reject(new FeatcacheError(reply.message, reply.exitCode ?? ExitCode.failed));
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

/** Opens `model` (whose buffer is transferred) in a new worker and probes its output width with one blank image. */
export async function openWorkerSession(
  model: Uint8Array | string,
  settings: SessionSettings,
  layout: InputLayout,
  output: string,
  probeSize: { height: number; width: number },
  known: { cpuOptimised?: CpuOptimised | undefined; dim?: number | null | undefined } = {},
): Promise<WorkerSession> {
  const started = performance.now();
  const { worker, request } = sessionWorker();
  let opened: WorkerReply;
  try {
    opened = await request(
      { key: 'open', type: 'open', model, settings, layout, output, probeSize, ...known },
      typeof model === 'string' ? [] : [model.buffer as ArrayBuffer],
    );
  } catch (error) {
    await worker.terminate();
    throw error;
  }
  if (opened.type !== 'opened') throw new Error('unexpected reply from the onnxruntime worker');
  let nextId = 0;
  return {
    provider: opened.provider,
    fallbackReasons: opened.fallbackReasons,
    dim: opened.dim,
    optimised: opened.optimised,
    timings: {
      workerS: Math.max(0, (performance.now() - started) / 1000 - opened.createS - opened.probeS),
      createS: opened.createS,
      probeS: opened.probeS,
    },
    async run(pixels, count, size) {
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
