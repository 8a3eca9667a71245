/**
 * Images behind http(s) URLs, as img2dataset and clip-retrieval users have them: a list of URLs, or a CSV whose id
 * (or `url`) column holds them. Fetches run with bounded concurrency ahead of decoding and inference; each attempt
 * has a timeout; 5xx, 408, 429 and connection errors are retried with exponential backoff (429/503 honour
 * Retry-After), other 4xx are not; a response larger than the size cap is abandoned. `prefetch` keeps up to
 * `concurrency` URLs fetched or in flight ahead of the extract loop's reads, so fetching overlaps decode and
 * inference. Proxies come from HTTPS_PROXY / HTTP_PROXY / NO_PROXY through undici's EnvHttpProxyAgent.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { type Dispatcher, EnvHttpProxyAgent, interceptors, request } from 'undici';
import { invalidParameter } from '../errors.js';
import type { Item } from './source.js';
import type { ImageSource, Stamp } from './source.js';
import { DEFAULT_URL_OPTIONS } from './url-defaults.js';

/** One URL's outcome: its bytes, or why not (with the HTTP status of the last attempt, when there was one). */
export interface Fetched {
  bytes?: Buffer;
  failure?: { message: string; status?: number };
}

const oneLine = (error: unknown) =>
  (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim();

export interface UrlSourceOptions {
  /** Requests in flight (and fetched images held) at most. */
  concurrency: number;
  /** Per attempt, from sending the request to the last byte of the body. */
  timeoutMs: number;
  /** Attempts after the first, for retryable failures only. */
  retries: number;
  /** First backoff; doubles per retry, with ±25% jitter. */
  backoffMs: number;
  /** Longest wait between attempts, including a server's Retry-After. */
  maxBackoffMs: number;
  /** Larger responses fail without being kept. */
  maxBytes: number;
  userAgent: string;
}

export { DEFAULT_URL_OPTIONS };

export { isUrl } from './url-defaults.js';

/** Reason phrases for the statuses a ledger most often shows. */
const STATUS_TEXT: Readonly<Record<number, string>> = Object.freeze({
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  408: 'Request Timeout',
  410: 'Gone',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
});

/** Statuses worth another attempt: the server may answer differently later. */
export function retryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

class FetchFailure extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** Retry-After as seconds or an HTTP date; null when absent or unparsable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** Errors name the CLI's flags (--fetch-concurrency, --fetch-timeout in seconds, --fetch-retries, --fetch-max-bytes). */
function validate(options: UrlSourceOptions): void {
  const positiveInteger = (name: string, value: number) => {
    if (!Number.isInteger(value) || value < 1) throw invalidParameter(name, 'a positive integer', value);
  };
  positiveInteger('fetchConcurrency', options.concurrency);
  positiveInteger('fetchMaxBytes', options.maxBytes);
  if (!(options.timeoutMs > 0))
    throw invalidParameter('fetchTimeout', 'a positive number of seconds', options.timeoutMs / 1000);
  if (!Number.isInteger(options.retries) || options.retries < 0)
    throw invalidParameter('fetchRetries', 'a non-negative integer', options.retries);
  if (!(options.backoffMs >= 0))
    throw invalidParameter('backoffMs', 'a non-negative number of milliseconds', options.backoffMs);
}

/** A URL names fixed content (as img2dataset assumes): its stamp never changes, so a cached URL is not fetched again. */
const URL_STAMP: Readonly<Stamp> = Object.freeze({ size: 0, mtimeMs: 0 });

/** A failed fetch, thrown by `read`: the status (when there was a response) goes to the failure ledger. */
export class FetchError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'FetchError';
  }
}

export class UrlSource implements ImageSource {
  readonly options: UrlSourceOptions;
  private readonly agent: EnvHttpProxyAgent;
  /** The agent with redirects followed (undici's request API, lighter than fetch on the main thread). */
  private readonly dispatcher: Dispatcher;
  /** Fetches started ahead of `read`, at most `concurrency`, keyed by URL. */
  private readonly ahead = new Map<string, Promise<Fetched>>();
  /** URLs read before the prefetch cursor reached them: never fetched twice. */
  private readonly taken = new Set<string>();
  private queue: readonly Item[] = [];
  private cursor = 0;
  private closed = false;
  /** Aborts requests and backoff waits still running when the source is closed (e.g. after Ctrl-C). */
  private readonly closing = new AbortController();

  constructor(options: Partial<UrlSourceOptions> = {}) {
    this.options = { ...DEFAULT_URL_OPTIONS, ...options };
    validate(this.options);
    this.agent = new EnvHttpProxyAgent();
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: 5 }));
  }

  locate(item: Item): string {
    return item.path;
  }

  async stamp(): Promise<Stamp> {
    return { ...URL_STAMP };
  }

  async read(item: Item): Promise<{ bytes: Buffer; stamp: Stamp }> {
    const ahead = this.ahead.get(item.path);
    if (!ahead) this.taken.add(item.path);
    const fetched = await (ahead ?? this.fetchItem(item));
    if (ahead) {
      // The slot frees only now, so fetched-but-unread and in-flight URLs together stay within `concurrency`.
      this.ahead.delete(item.path);
      this.fill();
    }
    if (fetched.failure) throw new FetchError(fetched.failure.message, fetched.failure.status);
    return { bytes: fetched.bytes!, stamp: { ...URL_STAMP } };
  }

  /** Fetches `items` in order ahead of `read`, keeping `concurrency` fetched or in flight. */
  prefetch(items: readonly Item[]): void {
    this.queue = items;
    this.cursor = 0;
    this.fill();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.closing.abort();
    await Promise.allSettled(this.ahead.values());
    this.ahead.clear();
    await this.agent.close();
  }

  private fill(): void {
    while (!this.closed && this.ahead.size < this.options.concurrency && this.cursor < this.queue.length) {
      const item = this.queue[this.cursor++]!;
      if (this.taken.has(item.path) || this.ahead.has(item.path)) continue;
      this.ahead.set(item.path, this.fetchItem(item));
    }
  }

  /** One URL with retries; never throws. */
  async fetchItem(item: Item): Promise<Fetched> {
    let last: FetchFailure | null = null;
    for (let attempt = 0; attempt <= this.options.retries; attempt++) {
      if (last)
        await sleep(this.backoff(attempt, last.retryAfterMs), undefined, { signal: this.closing.signal }).catch(
          () => {},
        );
      if (this.closed) return { failure: { message: 'not fetched: the source was closed' } };
      try {
        return { bytes: await this.fetchOnce(item.path) };
      } catch (error) {
        last = error instanceof FetchFailure ? error : new FetchFailure(oneLine(error), false);
        if (!last.retryable) break;
      }
    }
    const attempts = last!.retryable ? ` after ${this.options.retries + 1} attempts` : '';
    const failure: NonNullable<Fetched['failure']> = { message: `${last!.message}${attempts}` };
    if (last!.status !== undefined) failure.status = last!.status;
    return { failure };
  }

  private backoff(attempt: number, retryAfterMs: number | undefined): number {
    const exponential = this.options.backoffMs * 2 ** (attempt - 1) * (0.75 + Math.random() * 0.5);
    return Math.min(this.options.maxBackoffMs, Math.max(exponential, retryAfterMs ?? 0));
  }

  private async fetchOnce(url: string): Promise<Buffer> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    const signal = AbortSignal.any([timeout, this.closing.signal]);
    let response: Dispatcher.ResponseData;
    try {
      response = await request(url, {
        dispatcher: this.dispatcher,
        signal,
        headers: { 'user-agent': this.options.userAgent, accept: 'image/*,*/*;q=0.8' },
      });
    } catch (error) {
      throw this.networkFailure(error, signal);
    }
    const { statusCode: status, headers, body } = response;
    const header = (name: string) => {
      const value = headers[name];
      return Array.isArray(value) ? (value[0] ?? null) : (value ?? null);
    };
    const discard = () => body.dump().catch(() => {});
    if (status < 200 || status >= 300) {
      await discard();
      const retryAfter = parseRetryAfter(header('retry-after'));
      throw new FetchFailure(
        `HTTP ${status}${STATUS_TEXT[status] ? ` ${STATUS_TEXT[status]}` : ''}`,
        retryableStatus(status),
        status,
        retryAfter ?? undefined,
      );
    }
    const type = header('content-type') ?? '';
    if (/^(text\/|application\/(json|xml|xhtml))/i.test(type)) {
      await discard();
      throw new FetchFailure(`not an image (content-type ${type.split(';')[0]})`, false, status);
    }
    const declared = Number(header('content-length') ?? NaN);
    if (declared > this.options.maxBytes) {
      body.destroy();
      throw new FetchFailure(`too large (${declared} bytes; the cap is ${this.options.maxBytes})`, false, status);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of body) {
        total += (chunk as Buffer).length;
        if (total > this.options.maxBytes) {
          body.destroy();
          throw new FetchFailure(`too large (more than ${this.options.maxBytes} bytes, the cap)`, false, status);
        }
        chunks.push(chunk as Buffer);
      }
    } catch (error) {
      if (error instanceof FetchFailure) throw error;
      throw this.networkFailure(error, signal, status);
    }
    if (total === 0) throw new FetchFailure('empty response (0 bytes)', false, status);
    return Buffer.concat(chunks, total);
  }

  private networkFailure(error: unknown, signal: AbortSignal, status?: number): FetchFailure {
    if (this.closing.signal.aborted) return new FetchFailure('not fetched: the source was closed', false, status);
    if (signal.aborted) return new FetchFailure(`timed out after ${this.options.timeoutMs} ms`, true, status);
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const detail = cause?.code ?? cause?.message ?? oneLine(error);
    const code = (error as { code?: string }).code;
    // An invalid URL or an unsupported scheme will not get better on retry.
    if (code === 'ERR_INVALID_URL') return new FetchFailure('not a valid URL', false, status);
    const permanent = code === 'UND_ERR_INVALID_ARG' || error instanceof TypeError;
    return new FetchFailure(
      `connection failed (${code && code !== 'UND_ERR_SOCKET' ? code : (cause?.code ?? detail)})`,
      !permanent,
      status,
    );
  }
}
