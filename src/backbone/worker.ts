/**
 * The onnxruntime session in a worker thread. onnxruntime-node's `run` holds its thread for the whole batch
 * (onnxruntime issue #19611); here that thread is this worker's, so the main thread keeps chaining the next batch's
 * reads and decodes while inference runs. Pixels and features cross by transfer, not copy.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type * as ort from 'onnxruntime-node';
import { errorMessage, flagName, nameOptionsWith } from '../errors.js';
import { type CpuOptimised, type InputLayout, type SessionSettings, openSession, runBatch } from './session.js';

/** Every request carries a key that its reply echoes, so replies (errors included) find their caller. */
export type RequestKey = number | 'open' | 'close';

export type WorkerRequest = { key: RequestKey } & (
  | {
      type: 'open';
      /** The graph, or its file (read by onnxruntime in this thread, never copied through the main one). */
      model: Uint8Array | string;
      settings: SessionSettings;
      cpuOptimised?: CpuOptimised | undefined;
      layout: InputLayout;
      output: string;
      probeSize: { height: number; width: number };
      /** The output width when known from an earlier start: skips the probe run. */
      dim?: number | null | undefined;
    }
  | { type: 'run'; pixels: Float32Array; count: number; size: number }
  | { type: 'close' }
);

export type WorkerReply = { key: RequestKey } & (
  | {
      type: 'opened';
      provider: string;
      fallbackReasons: string[];
      dim: number;
      optimised: 'loaded' | 'saved' | 'none';
      /** Seconds to create the session, and to run the probe (0 when skipped). */
      createS: number;
      probeS: number;
    }
  | { type: 'result'; features: Float32Array }
  | { type: 'error'; message: string; exitCode?: number }
  | { type: 'closed' }
);

if ((workerData as { flagNames?: boolean } | null)?.flagNames) nameOptionsWith(flagName);

let session: ort.InferenceSession | null = null;
let layout: InputLayout;
let output: string;

async function handle(request: WorkerRequest): Promise<WorkerReply> {
  switch (request.type) {
    case 'open': {
      const started = performance.now();
      const opened = await openSession(request.model, { ...request.settings, cpuOptimised: request.cpuOptimised });
      const created = performance.now();
      session = opened.session;
      layout = request.layout;
      output = request.output;
      const { height, width } = request.probeSize;
      const dim =
        request.dim ??
        (await runBatch(session, layout, request.probeSize, new Float32Array(3 * height * width), 1, output)).dim;
      return {
        key: request.key,
        type: 'opened',
        provider: opened.provider,
        fallbackReasons: opened.fallbackReasons,
        dim,
        optimised: opened.optimised ?? 'none',
        createS: (created - started) / 1000,
        probeS: (performance.now() - created) / 1000,
      };
    }
    case 'run': {
      const result = await runBatch(
        session!,
        layout,
        { height: request.size, width: request.size },
        request.pixels,
        request.count,
        output,
      );
      return { key: request.key, type: 'result', features: result.features };
    }
    case 'close':
      await session?.release();
      session = null;
      return { key: request.key, type: 'closed' };
  }
}

parentPort?.on('message', (request: WorkerRequest) => {
  handle(request).then(
    (reply) => parentPort!.postMessage(reply, reply.type === 'result' ? [reply.features.buffer as ArrayBuffer] : []),
    (error: unknown) =>
      parentPort!.postMessage({
        key: request.key,
        type: 'error',
        message: errorMessage(error),
        exitCode: (error as { exitCode?: number }).exitCode,
      } satisfies WorkerReply),
  );
});
