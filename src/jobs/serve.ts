/**
 * `serve`: a trained head (fused with its backbone in memory) or a bundle file behind an HTTP endpoint with dynamic
 * batching. The server listens at once and loads the model in the background; `ready` (and GET /ready) turn true
 * when it can answer. `close()` stops accepting, answers everything already admitted, then releases the model.
 */
import * as fs from 'node:fs/promises';
import sharp from 'sharp';
import type { AddressInfo } from 'node:net';
import { parseDevice, threadCount } from '../backbone/device.js';
import { maxPixelsLimit } from '../image/presets.js';
import {
  FeatcacheError,
  errorMessage,
  invalidParameter,
  nonNegativeInteger,
  numberIn,
  optionName,
  positiveInteger,
  ExitCode,
} from '../errors.js';
import { type OpenedBundle, buildBundle, openBundle, openBundleBytes } from '../export/bundle.js';
import { MicroBatcher } from '../serve/batcher.js';
import { type ImageBatcher, type ServerState, createServeApp } from '../serve/server.js';
import { DEFAULT_SERVE_OPTIONS } from './defaults.js';

export { DEFAULT_SERVE_OPTIONS };

export interface ServeOptions {
  /** Head directory written by train-head (fused with its backbone at start-up), or a bundle .onnx file. */
  head: string;
  /** A bundle file (from `featcache bundle`); when set, `head` is not used. */
  bundle: string | undefined;
  /** Backbone file for `head`; default: the one recorded in the head (checked by sha256). */
  model: string | undefined;
  host: string;
  /** 0 picks a free port (see the handle's url). */
  port: number;
  maxBatch: number;
  maxWaitMs: number;
  /** Requests admitted at once (decoding, queued or running); more are answered 503. */
  maxQueue: number;
  /** Largest upload, in MiB (413 beyond). */
  maxBodyMb: number;
  maxPixels: number;
  timeoutMs: number;
  top: number;
  /** `cpu`, `auto`, `cuda` or `cuda:N`. */
  device: string;
  threads: number;
  log: (line: string) => void;
}

/** The longest delay Node's timers accept (2³¹ − 1 ms). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface ServeHandle {
  url: string;
  /** Resolves once the model is loaded and /predict answers; rejects if it cannot be loaded. */
  ready: Promise<void>;
  /** Stops accepting, drains in-flight requests, releases the model. Idempotent. */
  close(): Promise<void>;
}

function checkOptions(o: ServeOptions): void {
  for (const name of ['maxBatch', 'maxQueue', 'timeoutMs', 'top'] as const) positiveInteger(name, o[name]);
  maxPixelsLimit(o.maxPixels);
  // Node's timers hold a signed 32-bit count of ms: a longer one fires at once, and every request would be 503.
  if (o.timeoutMs > MAX_TIMER_MS)
    throw invalidParameter(
      'timeoutMs',
      `a positive integer of milliseconds up to ${MAX_TIMER_MS} (about 24.8 days)`,
      o.timeoutMs,
    );
  nonNegativeInteger('maxWaitMs', o.maxWaitMs);
  threadCount(o.threads);
  numberIn('port', o.port, 0, 65535);
  numberIn('maxBodyMb', o.maxBodyMb, 0, 4096, true);
  parseDevice(o.device);
}

async function loadModel(o: ServeOptions): Promise<OpenedBundle> {
  const settings = { device: parseDevice(o.device), threads: o.threads };
  const bundleFile =
    o.bundle ??
    ((await fs.stat(o.head).then(
      (s) => s.isFile(),
      () => false,
    ))
      ? o.head
      : undefined);
  if (bundleFile) return openBundle(bundleFile, settings);
  const { bytes } = await buildBundle({ head: o.head, model: o.model });
  return openBundleBytes(bytes, o.head, settings);
}

export async function serve(partial: Partial<ServeOptions> = {}): Promise<ServeHandle> {
  const options: ServeOptions = { ...DEFAULT_SERVE_OPTIONS, ...partial };
  checkOptions(options);
  // sharp's operation cache keys on inputs; every upload is a new buffer, so it only holds memory (RSS grew ~50 MB
  // over a soak). A server process has no other use for it.
  sharp.cache(false);
  const state: ServerState = { model: null, batcher: null, loadError: null, closing: false };
  const policy = () => ({ ...state.model!.preprocessing.policy, maxPixels: options.maxPixels });
  const app = createServeApp(
    state,
    {
      maxBodyBytes: Math.round(options.maxBodyMb * 1024 * 1024),
      maxPixels: options.maxPixels,
      maxInFlight: options.maxQueue,
      timeoutMs: options.timeoutMs,
      top: options.top,
    },
    policy,
  );
  try {
    await app.listen({ host: options.host, port: options.port });
  } catch (error) {
    // An address that does not resolve or is not this machine's is the host's fault; a port in use or forbidden, the port's.
    const code = (error as NodeJS.ErrnoException).code ?? '';
    const culprit = ['ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'EAI_NONAME', 'EAI_FAIL'].includes(code)
      ? 'host'
      : 'port';
    throw new FeatcacheError(
      `${optionName(culprit)}: cannot listen on ${options.host}:${options.port} (${errorMessage(error)})`,
      ExitCode.failed,
    );
  }
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}/`;
  options.log(`serve: listening on ${url} (loading the model…)`);

  const ready = (async () => {
    const started = performance.now();
    try {
      const model = await loadModel(options);
      if (state.closing) {
        await model.close();
        return;
      }
      const classes = model.classes.length;
      const perImage = 3 * model.preprocessing.input.height * model.preprocessing.input.width;
      const batcher: ImageBatcher = new MicroBatcher<Float32Array, Float32Array>(
        async (images: Float32Array[]) => {
          const pixels = new Float32Array(images.length * perImage);
          images.forEach((image, i) => pixels.set(image, i * perImage));
          const probabilities = await model.predict(pixels, images.length);
          return images.map((_, i) => probabilities.slice(i * classes, (i + 1) * classes));
        },
        {
          maxBatch: options.maxBatch,
          maxWaitMs: options.maxWaitMs,
          maxQueue: options.maxQueue,
          timeoutMs: options.timeoutMs,
        },
      );
      state.batcher = batcher;
      state.model = model;
      options.log(
        `serve: ready in ${((performance.now() - started) / 1000).toFixed(1)} s — ${classes} classes, ${model.provider}, max batch ${options.maxBatch}, max wait ${options.maxWaitMs} ms`,
      );
    } catch (error) {
      state.loadError = errorMessage(error);
      options.log(`serve: the model failed to load: ${state.loadError}`);
      throw error;
    }
  })();
  ready.catch(() => {});

  let closed: Promise<void> | null = null;
  const close = () =>
    (closed ??= (async () => {
      state.closing = true;
      // app.close() waits for requests already being handled; those wait on the batcher, which from now on runs
      // what it has without waiting for batches to fill.
      state.batcher?.hurry();
      await app.close();
      await state.batcher?.drain();
      await ready.catch(() => {});
      await state.model?.close();
      options.log('serve: stopped');
    })());
  return { url, ready, close };
}
