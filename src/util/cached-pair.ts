/**
 * The derived files featcache caches beside a split's parts (a kNN graph's indices and distances, a map layout's x
 * and y): two arrays of n 4-byte numbers back to back in a `.bin` under a fresh name, named by a small JSON metadata
 * file that is written after it. One reader and one writer for the neighbours' and the map's caches.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { writeBytesAtomic } from './fsx.js';

/** `stem` made unique to this process and moment, so a new file never overwrites one a reader may be using. */
export const uniqueBinName = (stem: string): string => `${stem}-${Date.now().toString(36)}-${process.pid}.bin`;

/** `first` then `second`, n values each, as one byte array. */
export function encodePair(first: Int32Array | Float32Array, second: Float32Array, n: number): Uint8Array {
  const bytes = new Uint8Array(n * 8);
  bytes.set(new Uint8Array(first.buffer, first.byteOffset, n * 4), 0);
  bytes.set(new Uint8Array(second.buffer, second.byteOffset, n * 4), n * 4);
  return bytes;
}

/** The file's bytes in a buffer of their own, or null when it is missing or not two arrays of n values. */
export async function readPair(file: string, n: number): Promise<ArrayBuffer | null> {
  const bytes = await fs.readFile(file).catch(() => null);
  return bytes && bytes.length === n * 8 ? new Uint8Array(bytes).buffer : null;
}

/**
 * Writes `bytes` under `meta.file` in `dir`, then the metadata; the file an older metadata named is removed after,
 * and only if it is a plain name in `dir` (a metadata file cannot point the removal anywhere else).
 */
export async function replaceCached(
  dir: string,
  metaName: string,
  meta: { file: string },
  bytes: Uint8Array,
  old: { file: string } | null,
): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await writeBytesAtomic(path.join(dir, meta.file), bytes);
  await writeBytesAtomic(path.join(dir, metaName), JSON.stringify(meta));
  if (old?.file && old.file !== meta.file && path.basename(old.file) === old.file)
    await fs.rm(path.join(dir, old.file), { force: true });
}
