/**
 * Resumable, verified downloads. Bytes go to `<dest>.part` (never the final name); an interrupted transfer resumes
 * with an HTTP Range request; the finished file must match the expected size and sha256 before it is renamed into
 * place. A corrupt download is deleted so the next attempt starts clean.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, errorMessage } from '../errors.js';

export interface DownloadOptions {
  url: string;
  dest: string;
  sha256?: string | undefined;
  size?: number | undefined;
  /** Attempts after a dropped connection; each resumes where the last stopped. */
  retries?: number;
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

/** One HTTP attempt: appends to the .part file from its current length. Returns false if the transfer broke off. */
async function attempt(options: DownloadOptions, part: string): Promise<{ complete: boolean; total: number | null; error?: string }> {
  const existing = await hashFile(part);
  let offset = existing.bytes;
  const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
  let response: Response;
  try {
    response = await fetch(options.url, { headers, redirect: 'follow' });
  } catch (error) {
    return { complete: false, total: null, error: errorMessage((error as { cause?: unknown }).cause ?? error) };
  }
  if (response.status === 416) return { complete: true, total: offset };
  if (!response.ok) throw new FeatcacheError(`${options.url}: HTTP ${response.status} ${response.statusText}`, 1);
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
      await handle.write(chunk);
      received += chunk.length;
      options.onProgress?.(received, total);
    }
    await handle.sync();
  } catch (error) {
    return { complete: false, total, error: errorMessage((error as { cause?: unknown }).cause ?? error) };
  } finally {
    await handle.close();
  }
  return { complete: total === null || received >= total, total, error: total !== null && received < total ? `connection closed at ${received} of ${total} bytes` : undefined };
}

export async function download(options: DownloadOptions): Promise<DownloadResult> {
  const part = `${options.dest}.part`;
  await fs.mkdir(path.dirname(path.resolve(options.dest)), { recursive: true });
  const resumedFrom = (await hashFile(part)).bytes;
  const retries = options.retries ?? 5;
  const errors: string[] = [];
  let attempts = 0;
  for (;;) {
    attempts++;
    const result = await attempt(options, part);
    if (result.complete) break;
    errors.push(result.error ?? 'transfer incomplete');
    if (attempts > retries) {
      throw new FeatcacheError(`${options.url}: download incomplete after ${attempts} attempts (${errors.at(-1)}); ${part} is kept — re-run to resume`, 1);
    }
    await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempts)));
  }
  const { hash, bytes } = await hashFile(part);
  const sha256 = hash.digest('hex');
  const problems: string[] = [];
  if (options.size !== undefined && bytes !== options.size) problems.push(`size ${bytes} bytes, expected ${options.size}`);
  if (options.sha256 && sha256 !== options.sha256.toLowerCase()) problems.push(`sha256 ${sha256}, expected ${options.sha256}`);
  if (problems.length > 0) {
    await fs.rm(part, { force: true });
    throw new FeatcacheError(`${options.url}: downloaded file is corrupt (${problems.join('; ')}); removed it — re-run to download again`, 1);
  }
  await fs.rename(part, options.dest);
  return { dest: options.dest, sha256, bytes, resumedFrom, attempts };
}
