/**
 * The HTTP layer of `serve`: routes, body parsing, limits and error mapping. Decoding runs in sharp (libuv threads),
 * inference in the onnxruntime worker behind the micro-batcher, so this thread only parses, normalises and answers.
 * Every failure a client can cause becomes a 4xx JSON answer `{ error }`; nothing it sends reaches a throw that
 * escapes a handler.
 */
import multipart from '@fastify/multipart';
import type { Socket } from 'node:net';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { errorMessage, optionName } from '../errors.js';
import { decodeToRgb, writeNormalised } from '../image/preprocess.js';
import type { ImagePolicy } from '../image/presets.js';
import { BatcherClosedError, type MicroBatcher, QueueFullError, QueueTimeoutError } from './batcher.js';
import type { ServedModel } from './model.js';
import { servePage } from './page.js';
import type { SimilarReference } from './similar.js';

export interface ServerLimits {
  /** Request bodies larger than this are refused with 413 before they are read in full. */
  maxBodyBytes: number;
  /** Images with more pixels are refused with 413 before decoding. */
  maxPixels: number;
  /** Requests admitted at once (decoding or queued or running); one more is answered 503 at once. */
  maxInFlight: number;
  /** Whole-request deadline (body upload included). */
  timeoutMs: number;
  /** Default and largest `top` a request may ask for. */
  top: number;
  /** POST /similar: whether it is served (a reference split was given), its default `k` and the largest allowed. */
  similar: { enabled: boolean; k: number; maxK: number };
}

/** One image in, one row out: its class probabilities, then its backbone features when /similar is served. */
export type ImageBatcher = MicroBatcher<Float32Array, Float32Array>;

export interface ServerState {
  model: ServedModel | null;
  batcher: ImageBatcher | null;
  /** The split /similar searches; set together with `model`, once both are loaded. */
  reference: SimilarReference | null;
  /** Why loading failed, if it did; the server stays up to say so on /health. */
  loadError: string | null;
  closing: boolean;
  /** Requests admitted and not yet closed (answered or aborted): what a drain waits for, and what its limit cuts. */
  admitted: Set<FastifyReply>;
}

/** The routes that take an image and hold an admission slot while they work. */
const ADMITTED_ROUTES: ReadonlySet<string> = new Set(['/predict', '/similar']);

/**
 * Answers every admitted request that has no answer yet with `status` and closes its connection; returns how many.
 * Written on the socket, not through the reply, because a request may still be uploading (its handler has not run)
 * or be deep in a handler that will try to answer later: the raw write wins either way, and a later send on the
 * closed socket is dropped.
 */
export function cutAdmitted(state: ServerState, status: 503, why: string): number {
  let cut = 0;
  for (const reply of state.admitted) {
    const socket = reply.raw.socket;
    if (reply.raw.headersSent || !socket || socket.destroyed) continue;
    writeRawAnswer(socket, status, why);
    cut++;
  }
  return cut;
}

const STATUS_TEXT: Readonly<Record<number, string>> = Object.freeze({
  408: 'Request Timeout',
  503: 'Service Unavailable',
});

/** A whole JSON error answer written straight to the socket, which then closes once it is flushed. */
function writeRawAnswer(socket: Socket, status: 408 | 503, why: string): void {
  const body = JSON.stringify({ error: why });
  const retry = status === 503 ? 'Retry-After: 1\r\n' : '';
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nConnection: close\r\n${retry}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  socket.destroySoon();
}

/** A client's mistake, with the status it earns. */
class ClientError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

function describeDecodeError(error: unknown, maxPixels: number): ClientError {
  const message = errorMessage(error);
  if (/pixel limit/i.test(message))
    return new ClientError(
      413,
      `the image has more than ${maxPixels} pixels (${optionName('maxPixels')}); send a smaller image`,
    );
  if (/unsupported image format|bad seek|corrupt header|not a known file format/i.test(message))
    return new ClientError(400, `the body is not an image in a format featcache can decode (${message})`);
  if (
    /premature end|truncated|unexpected end|end of (?:file|stream)|incomplete|read error|invalid|corrupt|damaged/i.test(
      message,
    )
  ) {
    return new ClientError(400, `the image is truncated or corrupt (${message})`);
  }
  return new ClientError(400, `the image could not be decoded (${message})`);
}

export function modelSummary(model: ServedModel) {
  const p = model.provenance;
  return {
    classes: model.classes.length,
    backbone: p.backbone.file,
    backboneSha256: p.backbone.sha256,
    tappedTensor: p.backbone.tappedTensor,
    head: p.head.dir,
    headId: p.head.id,
    temperature: p.head.temperature,
    preset: model.preprocessing.preset.name,
    bundledAt: p.createdAt,
    featcache: p.versions.featcache,
    provider: model.provider,
  };
}

export function createServeApp(state: ServerState, limits: ServerLimits, policy: () => ImagePolicy): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: limits.maxBodyBytes,
    requestTimeout: limits.timeoutMs,
    // Answer new requests on kept-alive sockets with 503 while draining; requests already in flight complete.
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });

  // Image bytes of any content type arrive as a Buffer: whether they are an image is for the decoder to say.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: limits.maxBodyBytes }, (_request, body, done) =>
    done(null, body),
  );
  app.register(multipart, {
    limits: { fileSize: limits.maxBodyBytes, files: 1, fields: 16, parts: 32, headerPairs: 200 },
  });

  app.setErrorHandler((error: FastifyError, _request, reply) => {
    const status =
      error instanceof ClientError
        ? error.statusCode
        : error.statusCode && error.statusCode >= 400 && error.statusCode < 500
          ? error.statusCode
          : 500;
    const message =
      status === 413 && error.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
        ? `the body is larger than ${limits.maxBodyBytes} bytes (${optionName('maxBodyMb')})`
        : status === 413 && error.code === 'FST_REQ_FILE_TOO_LARGE'
          ? `the uploaded file is larger than ${limits.maxBodyBytes} bytes (${optionName('maxBodyMb')})`
          : status === 500
            ? `internal error: ${errorMessage(error)}`
            : errorMessage(error);
    reply.code(status).send({ error: message });
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({
      error: `no route ${request.method} ${request.url.split('?')[0]}; try GET /, POST /predict, POST /similar, GET /health, GET /ready, GET /model`,
    });
  });

  // Back-pressure before the body is read: a full server answers 503 without buffering anything.
  app.addHook('onRequest', async (request, reply) => {
    if (request.method !== 'POST' || !ADMITTED_ROUTES.has(request.routeOptions.url ?? '')) return;
    if (request.routeOptions.url === '/similar' && !limits.similar.enabled)
      return reply.code(404).send({
        error: `POST /similar is off: start serve with ${optionName('similarSplit')} SPLIT (and ${optionName('cache')} DIR) to search a cached split`,
      });
    if (state.closing) return reply.code(503).header('retry-after', '1').send({ error: 'the server is shutting down' });
    if (!state.model) {
      return reply
        .code(503)
        .header('retry-after', '1')
        .send({
          error: state.loadError
            ? `the model failed to load: ${state.loadError}`
            : 'the model is still loading; see GET /ready',
        });
    }
    if (state.admitted.size >= limits.maxInFlight) {
      return reply
        .code(503)
        .header('retry-after', '1')
        .send({
          error: `the server is busy (${state.admitted.size} requests in flight, ${optionName('maxQueue')} ${limits.maxInFlight}); retry later`,
        });
    }
    state.admitted.add(reply);
    // 'close' fires once for every response, answered or aborted (a client that hangs up mid-upload included);
    // onResponse does not run for aborted requests, and a leaked slot would end in a server that only says 503.
    reply.raw.once('close', () => state.admitted.delete(reply));
    limitUpload(request, limits.timeoutMs);
  });
  // While draining, answers close their connection, so a kept-alive client does not hold the shutdown open.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (state.closing) reply.header('connection', 'close');
    return payload;
  });

  app.get('/', async (_request, reply) => {
    const model = state.model;
    const provenance = model
      ? `backbone ${model.provenance.backbone.file} (sha256 ${model.provenance.backbone.sha256.slice(0, 12)}…), head ${model.provenance.head.dir}`
      : 'model loading…';
    reply
      .type('text/html; charset=utf-8')
      .send(servePage({ title: 'featcache classifier', classes: model?.classes ?? [], provenance, top: limits.top }));
  });

  app.get('/health', async () => ({
    status: state.loadError ? 'failed' : 'ok',
    ready: state.model !== null && !state.closing,
    ...(state.loadError ? { error: state.loadError } : {}),
    inFlight: state.admitted.size,
    batcher: state.batcher?.stats() ?? null,
    similar: state.reference
      ? { split: state.reference.split, rows: state.reference.rows, method: state.reference.method }
      : null,
  }));

  app.get('/ready', async (_request, reply) => {
    const ready = state.model !== null && !state.closing;
    reply.code(ready ? 200 : 503).send({ ready, ...(state.loadError ? { error: state.loadError } : {}) });
  });

  app.get('/model', async (_request, reply) => {
    const model = state.model;
    if (!model) return reply.code(503).send({ error: 'the model is still loading' });
    return {
      classes: model.classes,
      preprocessing: model.preprocessing,
      provenance: model.provenance,
      provider: model.provider,
      similar: state.reference
        ? {
            cache: state.reference.cache,
            split: state.reference.split,
            rows: state.reference.rows,
            dim: state.reference.dim,
            method: state.reference.method,
            metric: 'cosine',
          }
        : null,
    };
  });

  /** The image of a request through the model: its output row, or the 4xx/503 the request earned. */
  const runImage = async (request: FastifyRequest, reply: FastifyReply) => {
    const model = state.model!;
    const bytes = await imageBytes(request);
    const decodeStarted = performance.now();
    const preset = model.preprocessing.preset;
    const imagePolicy = policy();
    let rgb: Buffer;
    try {
      rgb = await decodeToRgb(bytes, preset, imagePolicy);
    } catch (error) {
      throw describeDecodeError(error, imagePolicy.maxPixels);
    }
    const pixels = new Float32Array(3 * preset.crop * preset.crop);
    writeNormalised(rgb, preset, model.layout.layout, pixels, 0);
    const decodeMs = performance.now() - decodeStarted;
    try {
      return { ...(await state.batcher!.submit(pixels)), decodeMs };
    } catch (error) {
      if (!isOverload(error)) throw error;
      reply
        .code(503)
        .header('retry-after', '1')
        .send({ error: (error as Error).message });
      return null;
    }
  };

  app.post('/predict', async (request, reply) => {
    const model = state.model!;
    const top = parseTop((request.query as Record<string, unknown>).top, limits.top, model.classes.length);
    const result = await runImage(request, reply);
    if (!result) return reply;
    const probabilities = result.output.subarray(0, model.classes.length);
    const order = Array.from(probabilities.keys())
      .sort((a, b) => probabilities[b]! - probabilities[a]! || a - b)
      .slice(0, top);
    return {
      top: order.map((c) => ({ label: model.classes[c]!, index: c, probability: probabilities[c]! })),
      model: modelSummary(model),
      timing: {
        decodeMs: round(result.decodeMs),
        waitMs: round(result.waitMs),
        inferMs: round(result.runMs),
        batchSize: result.batchSize,
      },
    };
  });

  app.post('/similar', async (request, reply) => {
    const model = state.model!;
    const reference = state.reference!;
    const k = parseK((request.query as Record<string, unknown>).k, limits.similar);
    const result = await runImage(request, reply);
    if (!result) return reply;
    const features = result.output.slice(model.classes.length);
    let found;
    try {
      found = await reference.search(features, k);
    } catch (error) {
      if (!isOverload(error)) throw error;
      return reply
        .code(503)
        .header('retry-after', '1')
        .send({ error: (error as Error).message });
    }
    return {
      split: reference.split,
      k: found.output.length,
      metric: 'cosine',
      method: reference.method,
      neighbours: found.output,
      model: modelSummary(model),
      timing: {
        decodeMs: round(result.decodeMs),
        waitMs: round(result.waitMs),
        inferMs: round(result.runMs),
        batchSize: result.batchSize,
        searchWaitMs: round(found.waitMs),
        searchMs: round(found.runMs),
        searchBatchSize: found.batchSize,
      },
    };
  });

  return app;
}

/** A batcher's refusals: the server is full, too slow for the deadline, or shutting down. */
function isOverload(error: unknown): boolean {
  return error instanceof QueueFullError || error instanceof QueueTimeoutError || error instanceof BatcherClosedError;
}

const round = (ms: number) => Math.round(ms * 100) / 100;

function parseK(value: unknown, limits: ServerLimits['similar']): number {
  if (value === undefined || value === '') return limits.k;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > limits.maxK)
    throw new ClientError(
      400,
      `k: expected a positive integer up to ${limits.maxK} (${optionName('similarMaxK')}), got ${JSON.stringify(value)}`,
    );
  return n;
}

function parseTop(value: unknown, fallback: number, classes: number): number {
  if (value === undefined || value === '') return Math.min(fallback, classes);
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new ClientError(400, `top: expected a positive integer, got ${JSON.stringify(value)}`);
  return Math.min(n, classes);
}

/** Uploads slower than this (after the first MIN_RATE_GRACE_MS) are cut: a slot is too scarce to lend to a trickle. */
export const MIN_UPLOAD_BYTES_PER_S = 1024;
const MIN_RATE_GRACE_MS = 2000;

/**
 * Bounds an admitted upload in time: the whole body within `timeoutMs`, and at least MIN_UPLOAD_BYTES_PER_S on
 * average after a short grace. Node's own requestTimeout is checked only every 30 s and a trickling client can hold
 * an admission slot for as long as it likes; a cut upload is answered 408 and its connection closed, which frees the
 * slot at once.
 */
function limitUpload(request: FastifyRequest, timeoutMs: number): void {
  const raw = request.raw;
  if (raw.readableEnded) return;
  const started = Date.now();
  // Counted on the socket, not with a 'data' listener, which would take bytes before the body parser is attached.
  const socket = raw.socket;
  const bytesAtStart = socket?.bytesRead ?? 0;
  const cut = (why: string) => {
    stop();
    if (raw.socket) writeRawAnswer(raw.socket, 408, why);
  };
  const deadline = setTimeout(
    () => cut(`the upload took longer than ${timeoutMs} ms (${optionName('timeoutMs')})`),
    timeoutMs,
  );
  const rate = setInterval(() => {
    const ms = Date.now() - started;
    const received = (socket?.bytesRead ?? 0) - bytesAtStart;
    if (ms >= MIN_RATE_GRACE_MS && (received * 1000) / ms < MIN_UPLOAD_BYTES_PER_S)
      cut(`the upload is slower than ${MIN_UPLOAD_BYTES_PER_S} bytes/s`);
  }, 500);
  const stop = () => {
    clearTimeout(deadline);
    clearInterval(rate);
  };
  raw.once('end', stop);
  raw.once('close', stop);
}

/** The image: the first file part of a multipart form, or the raw body. */
async function imageBytes(request: FastifyRequest): Promise<Buffer> {
  if (request.isMultipart()) {
    let file;
    try {
      file = await request.file();
    } catch (error) {
      // busboy's own errors (no boundary, malformed parts) carry no status; they are the client's all the same.
      if ((error as FastifyError).statusCode) throw error;
      throw new ClientError(400, `the multipart body is malformed (${errorMessage(error)})`);
    }
    if (!file)
      throw new ClientError(
        400,
        'the multipart form has no file part; send the image as a file field (e.g. curl -F image=@photo.jpg)',
      );
    let bytes: Buffer;
    try {
      bytes = await file.toBuffer();
    } catch (error) {
      // A part that never ends (no closing boundary) is the client's malformed form, not a server error.
      if ((error as FastifyError).statusCode) throw error;
      throw new ClientError(400, `the multipart body is malformed (${errorMessage(error)})`);
    }
    if (bytes.length === 0) throw new ClientError(400, `the file part "${file.fieldname}" is empty`);
    return bytes;
  }
  const body = request.body;
  if (!Buffer.isBuffer(body) || body.length === 0) {
    throw new ClientError(
      400,
      'the body is empty; POST the image bytes (e.g. curl --data-binary @photo.jpg -H "content-type: image/jpeg") or a multipart form',
    );
  }
  return body;
}

export type { FastifyReply };
