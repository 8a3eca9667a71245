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
import { buildBundle } from '../export/bundle.js';
import { MicroBatcher } from '../serve/batcher.js';
import { type ServedModel, openServedModel } from '../serve/model.js';
import { type SimilarReference, checkReferenceSplit, openReference } from '../serve/similar.js';
import { type ImageBatcher, type ServerState, createServeApp, cutAdmitted } from '../serve/server.js';
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
  /**
   * On close (SIGTERM/SIGINT in the CLI), how long admitted requests (uploading, queued or running) get to be
   * answered; those still unanswered then get a 503 and the drain reports itself incomplete. 0 cuts at once.
   */
  drainMs: number;
  top: number;
  /** Cache directory /similar searches (with `similarSplit`). */
  cache: string;
  /** Split of `cache` that POST /similar searches; /similar is off when absent. */
  similarSplit: string | undefined;
  /** Neighbours per /similar answer unless the request asks ?k=N. */
  similarK: number;
  /** The largest ?k a request may ask for (400 beyond). */
  similarMaxK: number;
  /** `cpu`, `auto`, `cuda` or `cuda:N`. */
  device: string;
  threads: number;
  log: (line: string) => void;
}

/** ?k beyond this would make one answer a page of the split, not its neighbours (and a heap of that size per query). */
export const MAX_SIMILAR_K = 10_000;

/** The longest delay Node's timers accept (2³¹ − 1 ms). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** How a close went: whether every request admitted before it was answered in full. */
export interface DrainReport {
  /** Requests admitted (uploading, queued or running) when the close began. */
  inFlight: number;
  /** Requests answered 503 because the drain limit (or abort()) came first. */
  cut: number;
  /** Every admitted request got its real answer. */
  complete: boolean;
}

export interface ServeHandle {
  url: string;
  /** Resolves once the model is loaded and /predict answers; rejects if it cannot be loaded. */
  ready: Promise<void>;
  /** Requests admitted now (uploading, queued or running). */
  inFlight(): number;
  /**
   * Stops accepting (new connections are refused, new requests on open ones answered 503), answers everything
   * already admitted within `drainMs` (503 for what is left at the limit), then releases the model. Idempotent.
   */
  close(): Promise<DrainReport>;
  /** Answers every admitted request 503 now and drops its connection (a second signal); returns how many. */
  abort(): number;
}

function checkOptions(o: ServeOptions): void {
  for (const name of ['maxBatch', 'maxQueue', 'timeoutMs', 'top'] as const) positiveInteger(name, o[name]);
  nonNegativeInteger('drainMs', o.drainMs);
  if (o.drainMs > MAX_TIMER_MS)
    throw invalidParameter('drainMs', `a whole number of milliseconds up to ${MAX_TIMER_MS}`, o.drainMs);
  maxPixelsLimit(o.maxPixels);
  // Node's timers hold a signed 32-bit count of ms: a longer one fires at once, and every request would be 503.
  if (o.timeoutMs > MAX_TIMER_MS)
    throw invalidParameter(
      'timeoutMs',
      `a positive integer of milliseconds up to ${MAX_TIMER_MS} (about 24.8 days)`,
      o.timeoutMs,
    );
  nonNegativeInteger('maxWaitMs', o.maxWaitMs);
  integerIn('similarMaxK', o.similarMaxK, 1, MAX_SIMILAR_K);
  integerIn('similarK', o.similarK, 1, o.similarMaxK);
  if (o.similarSplit !== undefined && (typeof o.similarSplit !== 'string' || o.similarSplit === ''))
    throw invalidParameter('similarSplit', 'the name of a split of --cache', o.similarSplit);
  threadCount(o.threads);
  numberIn('port', o.port, 0, 65535);
  numberIn('maxBodyMb', o.maxBodyMb, 0, 4096, true);
  parseDevice(o.device);
}

function integerIn(option: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max)
    throw invalidParameter(option, `an integer in [${min}, ${max}]`, value);
}

async function loadModel(o: ServeOptions): Promise<ServedModel> {
  const settings = { device: parseDevice(o.device), threads: o.threads, features: o.similarSplit !== undefined };
  const bundleFile =
    o.bundle ??
    ((await fs.stat(o.head).then(
      (s) => s.isFile(),
      () => false,
    ))
      ? o.head
      : undefined);
  if (bundleFile) {
    const bytes = await fs.readFile(bundleFile).catch((error: NodeJS.ErrnoException) => {
      throw new FeatcacheError(
        `${optionName(o.bundle ? 'bundle' : 'head')}: cannot read ${bundleFile} (${error.code})`,
      );
    });
    return openServedModel(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), bundleFile, settings);
  }
  const { bytes } = await buildBundle({ head: o.head, model: o.model });
  return openServedModel(bytes, o.head, settings);
}

export async function serve(partial: Partial<ServeOptions> = {}): Promise<ServeHandle> {
  const options: ServeOptions = { ...DEFAULT_SERVE_OPTIONS, ...partial };
  checkOptions(options);
  // sharp's operation cache keys on inputs; every upload is a new buffer, so it only holds memory (RSS grew ~50 MB
  // over a soak). A server process has no other use for it.
  sharp.cache(false);
  if (options.similarSplit !== undefined) await checkReferenceSplit(options.cache, options.similarSplit);
  const state: ServerState = {
    model: null,
    batcher: null,
    reference: null,
    loadError: null,
    closing: false,
    admitted: new Set(),
  };
  const policy = () => ({ ...state.model!.preprocessing.policy, maxPixels: options.maxPixels });
  const app = createServeApp(
    state,
    {
      maxBodyBytes: Math.round(options.maxBodyMb * 1024 * 1024),
      maxPixels: options.maxPixels,
      maxInFlight: options.maxQueue,
      timeoutMs: options.timeoutMs,
      top: options.top,
      similar: { enabled: options.similarSplit !== undefined, k: options.similarK, maxK: options.similarMaxK },
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
      let reference: SimilarReference | null = null;
      try {
        if (options.similarSplit !== undefined && !state.closing)
          reference = await openReference(options.cache, options.similarSplit, model, {
            maxBatch: options.maxBatch,
            maxQueue: options.maxQueue,
            timeoutMs: options.timeoutMs,
            log: options.log,
          });
      } catch (error) {
        await model.close();
        throw error;
      }
      if (state.closing) {
        await reference?.close();
        await model.close();
        return;
      }
      const classes = model.classes.length;
      const width = classes + model.featureDim;
      const perImage = 3 * model.preprocessing.input.height * model.preprocessing.input.width;
      const batcher: ImageBatcher = new MicroBatcher<Float32Array, Float32Array>(
        async (images: Float32Array[]) => {
          const pixels = new Float32Array(images.length * perImage);
          images.forEach((image, i) => pixels.set(image, i * perImage));
          const rows = await model.infer(pixels, images.length);
          return images.map((_, i) => rows.slice(i * width, (i + 1) * width));
        },
        {
          maxBatch: options.maxBatch,
          maxWaitMs: options.maxWaitMs,
          maxQueue: options.maxQueue,
          timeoutMs: options.timeoutMs,
        },
      );
      state.batcher = batcher;
      state.reference = reference;
      state.model = model;
      options.log(
        `serve: ready in ${((performance.now() - started) / 1000).toFixed(1)} s — ${classes} classes, ${model.provider}, max batch ${options.maxBatch}, max wait ${options.maxWaitMs} ms${reference ? `; POST /similar searches ${reference.rows} rows of ${options.cache}/${reference.split} (${reference.method})` : ''}`,
      );
    } catch (error) {
      state.loadError = errorMessage(error);
      options.log(`serve: the model failed to load: ${state.loadError}`);
      throw error;
    }
  })();
  ready.catch(() => {});

  const release = async () => {
    await state.batcher?.drain();
    await state.reference?.close();
    await ready.catch(() => {});
    await state.model?.close();
  };
  const cutMessage = (why: string) => `the server shut down before answering (${why}); retry on another instance`;
  let closed: Promise<DrainReport> | null = null;
  const close = () =>
    (closed ??= (async () => {
      state.closing = true;
      const inFlight = state.admitted.size;
      // app.close() stops listening at once and waits for requests already admitted; those wait on the batcher,
      // which from now on runs what it has without waiting for batches to fill.
      state.batcher?.hurry();
      const appClosed = app.close();
      const drained = appClosed.then(release);
      // fastify stops listening a few ticks into its close; say so only once a new connection is really refused.
      for (let tick = 0; tick < 1000 && app.server.listening; tick++) await new Promise(setImmediate);
      options.log(
        `serve: not accepting connections; answering the ${inFlight} requests in flight (up to ${options.drainMs} ms, ${optionName('drainMs')})`,
      );
      if (await settlesWithin(drained, options.drainMs)) {
        await drained;
        options.log('serve: stopped');
        return { inFlight, cut: 0, complete: true };
      }
      const cut = cutAdmitted(state, 503, cutMessage(`drain limit ${optionName('drainMs')} ${options.drainMs} ms`));
      // The 503s are on their way; a connection still open after a moment (a request mid-headers) is dropped.
      if (!(await settlesWithin(appClosed, CUT_GRACE_MS))) app.server.closeAllConnections();
      await appClosed;
      // A batch may still be running in the worker: the model is released when it ends, not waited for here.
      drained.catch((error: unknown) => options.log(`serve: releasing the model: ${errorMessage(error)}`));
      options.log(
        cut > 0
          ? `serve: stopped at the drain limit (${optionName('drainMs')} ${options.drainMs} ms): ${cut} of ${inFlight} requests in flight answered 503`
          : 'serve: stopped (the model was still loading at the drain limit)',
      );
      return { inFlight, cut, complete: cut === 0 };
    })());
  const abort = () => {
    state.closing = true;
    return cutAdmitted(state, 503, cutMessage('the server was told to stop at once'));
  };
  return { url, ready, inFlight: () => state.admitted.size, close, abort };
}

/** After the drain limit cuts what is left, how long the 503s get to be written before connections are dropped. */
const CUT_GRACE_MS = 1000;

/** Whether `promise` settles within `ms` (a rejection counts as settled: the caller awaits it for the error). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
