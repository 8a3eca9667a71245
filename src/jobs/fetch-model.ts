/**
 * Fetching a pretrained backbone into a models folder: verified (sha256 and ONNX structure), atomic (a `.part` file
 * until verified) and resumable. Sources are tried in order — the maintained Hugging Face mirror, then the old
 * github.com/onnx/models URL — and when all fail, every source's reason is in the one error line.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { decodeModel } from '../backbone/graph.js';
import { resolveTap } from '../backbone/tap.js';
import { FeatcacheError, errorMessage, invalidParameter, oneOf, ExitCode, damagedFile } from '../errors.js';
import { type ProxySettings, download } from '../fetch/download.js';
import { MODEL_NAMES, MODEL_SOURCES } from '../fetch/registry.js';
import { exists, sha256File } from '../util/fsx.js';
import { withDefaults } from '../util/options.js';
import { DEFAULT_FETCH_MODEL_OPTIONS } from './defaults.js';

export { DEFAULT_FETCH_MODEL_OPTIONS };

export interface FetchModelOptions {
  /** A name from MODEL_NAMES; with `urls`, any name (the file is saved as `<name>.onnx`). */
  name: string;
  /** Folder to save into. */
  dir: string;
  /** URLs to try in order instead of the registry's sources (mirrors of your own). */
  urls: readonly string[] | undefined;
  /** Expected sha256 of the file; the registry's, or the one pinned on first download, otherwise. */
  sha256: string | undefined;
  /** Retries per source after a dropped or stalled transfer (each resumes where the last stopped). */
  retries: number;
  /** Pause before the first retry, doubling after each. */
  retryDelayMs: number;
  /** Give up connecting to a host after this long. */
  connectTimeoutMs: number;
  /** Give up on a transfer when no bytes arrive for this long (then retry, then the next source). */
  stallTimeoutMs: number;
  /** Proxy settings; undefined uses HTTP_PROXY / HTTPS_PROXY / NO_PROXY from the environment. */
  proxy: ProxySettings | undefined;
  onProgress: ((received: number, total: number | null, url: string) => void) | undefined;
  log: ((line: string) => void) | undefined;
}

export interface FetchResult {
  name: string;
  file: string;
  sha256: string;
  bytes: number;
  status: 'downloaded' | 'present';
  verifiedBy: 'registry sha256' | 'given sha256' | 'pinned sha256' | 'pinned now (first download)';
  resumedFrom: number;
  tap: string;
  /** The URL the file came from; null when it was already present. */
  source: string | null;
  /** Sources tried before `source`, each with why it failed. */
  failedSources: string[];
}

const pinFile = (file: string) => `${file}.sha256`;

async function readPin(file: string): Promise<string | null> {
  const text = await fs.readFile(pinFile(file), 'utf8').catch(() => null);
  return text ? (text.trim().split(/\s+/)[0] ?? null) : null;
}

/** The downloaded bytes must be an ONNX graph with a poolable node, or they are not a backbone. */
async function verifyStructure(file: string): Promise<string> {
  try {
    const model = decodeModel(await fs.readFile(file), file);
    return resolveTap(model.graph!, 'auto').tensor;
  } catch (error) {
    throw damagedFile(
      file,
      `downloaded, but not a usable backbone (${(error as Error).message})`,
      'delete it and check the URL',
    );
  }
}

/** Downloads from one URL and checks the result is a backbone; a file that is not one is removed. */
async function fetchFrom(
  url: string,
  file: string,
  expected: string | undefined,
  size: number | undefined,
  o: FetchModelOptions,
) {
  const result = await download({
    url,
    dest: file,
    sha256: expected,
    size,
    retries: o.retries,
    retryDelayMs: o.retryDelayMs,
    connectTimeoutMs: o.connectTimeoutMs,
    stallTimeoutMs: o.stallTimeoutMs,
    proxy: o.proxy,
    onProgress: o.onProgress ? (received, total) => o.onProgress!(received, total, url) : undefined,
  });
  try {
    return { ...result, tap: await verifyStructure(file) };
  } catch (error) {
    await fs.rm(file, { force: true });
    throw error;
  }
}

function checkFetchOptions(o: FetchModelOptions, known: boolean): void {
  if (o.urls !== undefined && o.urls.length === 0) throw invalidParameter('urls', 'at least one URL', '[]');
  if (!known && !o.urls) throw invalidParameter('name', `${oneOf(MODEL_NAMES)}, or any name with urls`, o.name);
  if (o.sha256 !== undefined && !/^[0-9a-f]{64}$/i.test(o.sha256))
    throw invalidParameter('sha256', '64 hex digits', o.sha256);
  if (!Number.isInteger(o.retries) || o.retries < 0) throw invalidParameter('retries', 'a whole number ≥ 0', o.retries);
}

/** A model file already in place: checked against the expected sha256 (pinned now if nothing was), not downloaded. */
async function presentModel(
  name: string,
  file: string,
  expected: string | undefined,
  pinned: boolean,
  verifiedBy: FetchResult['verifiedBy'],
): Promise<FetchResult> {
  const sha256 = await sha256File(file);
  if (expected && sha256 !== expected.toLowerCase()) {
    throw damagedFile(
      file,
      `exists but its sha256 ${sha256.slice(0, 12)}… is not the expected ${expected.slice(0, 12)}…`,
      'delete it to download again',
    );
  }
  if (!pinned) await fs.writeFile(pinFile(file), `${sha256}  ${path.basename(file)}\n`);
  return {
    name,
    file,
    sha256,
    bytes: (await fs.stat(file)).size,
    status: 'present',
    verifiedBy,
    resumedFrom: 0,
    tap: await verifyStructure(file),
    source: null,
    failedSources: [],
  };
}

/**
 * Downloads a pretrained backbone into `dir`, or checks the copy already there. Known models are verified by the
 * registry's sha256 (or by one pinned beside the file on first download), and every download must decode as an
 * ONNX graph with a poolable node.
 *
 * @example
 * ```ts
 * import { fetchModel } from 'featcache';
 * const model = await fetchModel({ name: 'resnet50', dir: 'models', stallTimeoutMs: 10_000, log: console.error });
 * console.log(model.file, model.sha256, model.source);
 * ```
 */
export async function fetchModel(options: Partial<FetchModelOptions> = {}): Promise<FetchResult> {
  const o: FetchModelOptions = withDefaults(DEFAULT_FETCH_MODEL_OPTIONS, options);
  const log = o.log ?? (() => {});
  const source = MODEL_SOURCES[o.name];
  checkFetchOptions(o, source !== undefined);
  const file = path.join(o.dir, source?.file ?? `${o.name}.onnx`);
  const pinned = await readPin(file);
  const expected = o.sha256 ?? source?.sha256 ?? pinned ?? undefined;
  const verifiedBy: FetchResult['verifiedBy'] = o.sha256
    ? 'given sha256'
    : source?.sha256
      ? 'registry sha256'
      : pinned
        ? 'pinned sha256'
        : 'pinned now (first download)';
  if (await exists(file)) return presentModel(o.name, file, expected, Boolean(pinned), verifiedBy);
  const urls = o.urls ?? source!.urls;
  const size = o.urls ? undefined : (source?.size ?? undefined);
  const failedSources: string[] = [];
  for (const [i, url] of urls.entries()) {
    try {
      const result = await fetchFrom(url, file, expected, size, o);
      if (!expected) await fs.writeFile(pinFile(file), `${result.sha256}  ${path.basename(file)}\n`);
      return {
        name: o.name,
        file,
        sha256: result.sha256,
        bytes: result.bytes,
        status: 'downloaded',
        verifiedBy,
        resumedFrom: result.resumedFrom,
        tap: result.tap,
        source: url,
        failedSources,
      };
    } catch (error) {
      const reason = errorMessage(error);
      failedSources.push(reason.startsWith(url) ? reason : `${url}: ${reason}`);
      if (i + 1 < urls.length) log(`fetch-model: ${reason}; trying ${urls[i + 1]}`);
    }
  }
  if (failedSources.length === 1) throw new FeatcacheError(failedSources[0]!, ExitCode.failed);
  const listed = failedSources.map((f, i) => `(${i + 1}) ${f}`).join(' ');
  throw new FeatcacheError(
    `fetch-model ${o.name}: every source failed: ${listed} — behind a proxy, set HTTPS_PROXY; or download the file yourself and pass its URL or path`,
    ExitCode.failed,
  );
}
