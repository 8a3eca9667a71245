/**
 * Resumable, verified downloads. Bytes go to `<dest>.part` (never the final name); an interrupted transfer resumes
 * with an HTTP Range request; the finished file must match the expected size and sha256 before it is renamed into
 * place. A corrupt download is deleted so the next attempt starts clean.
 *
 * Every request has a connect timeout and a stall timeout (no bytes for that long): on a network that drops packets
 * instead of refusing them, a download gives up with the reason instead of waiting forever. Requests go through
 * HTTP_PROXY / HTTPS_PROXY unless NO_PROXY exempts the host (undici's EnvHttpProxyAgent).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { EnvHttpProxyAgent, type Response, fetch } from 'undici';
import { FeatcacheError, errorMessage, invalidParameter, ExitCode, damagedFile } from '../errors.js';
import { DEFAULT_DOWNLOAD_TIMEOUTS } from './timeouts.js';

export interface DownloadTimeouts {
  /** Give up on a TCP (and TLS) connection that takes longer than this. */
  connectTimeoutMs: number;
  /** Give up on a transfer when no bytes (headers or body) arrive for this long; the attempt is retried. */
  stallTimeoutMs: number;
}

export { DEFAULT_DOWNLOAD_TIMEOUTS };

/** Proxy settings; each defaults to the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, or their lower-case forms). */
export interface ProxySettings {
  httpProxy?: string | undefined;
  httpsProxy?: string | undefined;
  noProxy?: string | undefined;
}

export interface DownloadOptions {
  url: string;
  dest: string;
  sha256?: string | undefined;
  size?: number | undefined;
  /** Attempts after a dropped or stalled connection; each resumes where the last stopped. */
  retries?: number;
  /** Pause before the first retry (doubling after each, at most 2 s). */
  retryDelayMs?: number;
  connectTimeoutMs?: number;
  stallTimeoutMs?: number;
  proxy?: ProxySettings | undefined;
  onProgress?: (received: number, total: number | null) => void;
}

export interface DownloadResult {
  dest: string;
  sha256: string;
  bytes: number;
  resumedFrom: number;
  attempts: number;
}

async function hashFile(file: string): Promise<{ hash: ReturnType<typeof createHash>; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const chunk of createReadStream(file)) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  return { hash, bytes };
}

/** Total size from a 200's Content-Length or a 206's Content-Range. */
function totalSize(response: Response, offset: number): number | null {
  const range = response.headers.get('content-range');
  const match = range ? /\/(\d+)$/.exec(range) : null;
  if (match) return Number(match[1]);
  const length = response.headers.get('content-length');
  return length ? Number(length) + (response.status === 206 ? offset : 0) : null;
}

/** Aborts a request when nothing has arrived for `ms`; `touch()` on every sign of life restarts the clock. */
function stallWatchdog(ms: number) {
  const controller = new AbortController();
  let timer: NodeJS.Timeout;
  const touch = () => {
    clearTimeout(timer);
    timer = setTimeout(() => controller.abort(new Error(`no bytes received for ${ms / 1000} s (stalled)`)), ms);
  };
  touch();
  return { signal: controller.signal, touch, stop: () => clearTimeout(timer) };
}

/** The most specific reason for a failed request: a watchdog's own reason, else undici's cause (e.g. connect timeout). */
function failureReason(error: unknown, signal: AbortSignal): string {
  if (signal.aborted) return errorMessage(signal.reason);
  const cause = (error as { cause?: unknown }).cause ?? error;
  const code = (cause as { code?: string }).code;
  const message = errorMessage(cause);
  return code && !message.includes(code) ? `${message} (${code})` : message;
}

type Attempt = { complete: boolean; total: number | null; error?: string | undefined };

/** One HTTP attempt: appends to the .part file from its current length. Returns complete: false if the transfer broke off. */
async function attempt(
  options: DownloadOptions,
  part: string,
  dispatcher: EnvHttpProxyAgent,
  stallMs: number,
): Promise<Attempt> {
  const existing = await hashFile(part);
  const offset = existing.bytes;
  const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
  const watchdog = stallWatchdog(stallMs);
  try {
    return await transfer(options, part, offset, headers, dispatcher, watchdog);
  } finally {
    watchdog.stop();
  }
}

async function transfer(
  options: DownloadOptions,
  part: string,
  startOffset: number,
  headers: Record<string, string>,
  dispatcher: EnvHttpProxyAgent,
  watchdog: ReturnType<typeof stallWatchdog>,
): Promise<Attempt> {
  let offset = startOffset;
  let response: Response;
  try {
    response = await fetch(options.url, { headers, redirect: 'follow', dispatcher, signal: watchdog.signal });
  } catch (error) {
    return { complete: false, total: null, error: failureReason(error, watchdog.signal) };
  }
  watchdog.touch();
  if (response.status === 416) return { complete: true, total: offset };
  if (!response.ok) {
    await response.body?.cancel().catch(() => {});
    throw new FeatcacheError(`${options.url}: HTTP ${response.status} ${response.statusText}`, ExitCode.failed);
  }
  if (response.status === 200 && offset > 0) {
    // The server ignored the Range request: start over.
    await fs.rm(part, { force: true });
    offset = 0;
  }
  const total = totalSize(response, offset);
  const handle = await fs.open(part, 'a');
  let received = offset;
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      watchdog.touch();
      await handle.write(chunk);
      received += chunk.length;
      options.onProgress?.(received, total);
    }
    await handle.sync();
  } catch (error) {
    return { complete: false, total, error: failureReason(error, watchdog.signal) };
  } finally {
    await handle.close();
  }
  return {
    complete: total === null || received >= total,
    total,
    error: total !== null && received < total ? `connection closed at ${received} of ${total} bytes` : undefined,
  };
}

/** Undici dispatcher with featcache's timeouts, honouring the proxy environment unless `proxy` overrides it. */
export function proxyDispatcher(proxy: ProxySettings | undefined, connectTimeoutMs: number): EnvHttpProxyAgent {
  const defined = Object.fromEntries(Object.entries(proxy ?? {}).filter(([, v]) => v !== undefined));
  // Stalls are caught by our own watchdog (it covers the proxy handshake too); undici's are switched off so the
  // reported reason is ours.
  return new EnvHttpProxyAgent({
    ...defined,
    connect: { timeout: connectTimeoutMs },
    headersTimeout: 0,
    bodyTimeout: 0,
  });
}

/** A partial file is resumed only from the URL that produced it; another source may serve other bytes. */
async function claimPart(part: string, url: string): Promise<void> {
  const sourceFile = `${part}.source`;
  const previous = await fs.readFile(sourceFile, 'utf8').catch(() => null);
  if (previous !== null && previous !== url) await fs.rm(part, { force: true });
  await fs.writeFile(sourceFile, url);
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw invalidParameter(name, 'a positive number of milliseconds', value);
  return value;
}

export async function download(options: DownloadOptions): Promise<DownloadResult> {
  const part = `${options.dest}.part`;
  const connectMs = positive(
    'connectTimeoutMs',
    options.connectTimeoutMs ?? DEFAULT_DOWNLOAD_TIMEOUTS.connectTimeoutMs,
  );
  const stallMs = positive('stallTimeoutMs', options.stallTimeoutMs ?? DEFAULT_DOWNLOAD_TIMEOUTS.stallTimeoutMs);
  await fs.mkdir(path.dirname(path.resolve(options.dest)), { recursive: true });
  await claimPart(part, options.url);
  const resumedFrom = (await hashFile(part)).bytes;
  const retries = options.retries ?? 5;
  const errors: string[] = [];
  let attempts = 0;
  const dispatcher = proxyDispatcher(options.proxy, connectMs);
  try {
    for (;;) {
      attempts++;
      const result = await attempt(options, part, dispatcher, stallMs);
      if (result.complete) break;
      errors.push(result.error ?? 'transfer incomplete');
      if (attempts > retries) {
        const kept = (await hashFile(part)).bytes > 0 ? `; ${part} is kept — re-run to resume` : '';
        throw new FeatcacheError(
          `${options.url}: download incomplete after ${attempts} attempts (${errors.at(-1)})${kept}`,
          ExitCode.failed,
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(2000, (options.retryDelayMs ?? 100) * 2 ** (attempts - 1))));
    }
  } catch (error) {
    // Nothing received: leave no empty .part behind (a partial one is kept for the next run to resume).
    if ((await hashFile(part)).bytes === 0)
      await Promise.all([fs.rm(part, { force: true }), fs.rm(`${part}.source`, { force: true })]);
    throw error;
  } finally {
    await dispatcher.destroy().catch(() => {});
  }
  const { hash, bytes } = await hashFile(part);
  const sha256 = hash.digest('hex');
  const problems: string[] = [];
  if (options.size !== undefined && bytes !== options.size)
    problems.push(`size ${bytes} bytes, expected ${options.size}`);
  if (options.sha256 && sha256 !== options.sha256.toLowerCase())
    problems.push(`sha256 ${sha256}, expected ${options.sha256}`);
  if (problems.length > 0) {
    await fs.rm(part, { force: true });
    await fs.rm(`${part}.source`, { force: true });
    throw damagedFile(
      options.url,
      `downloaded file is corrupt (${problems.join('; ')})`,
      'removed it — re-run to download again',
    );
  }
  await fs.rename(part, options.dest);
  await fs.rm(`${part}.source`, { force: true });
  return { dest: options.dest, sha256, bytes, resumedFrom, attempts };
}
