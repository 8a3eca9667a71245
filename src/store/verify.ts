/**
 * Checking committed parts against what their index recorded at commit (length and sha256), and setting damaged
 * ones aside. A part damaged after its commit (a truncated copy, a zeroed block, a disk error) must never be
 * reported as "unchanged": extract sets it aside under a `.damaged` name — never deleting it — and extracts its
 * rows again; readers refuse it with the remedy; `info --check` lists it.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import { type PartIndex, decodePart, indexFileOf, readRecordedIndex } from './part.js';

export const DAMAGED_SUFFIX = '.damaged';

/** What is wrong with a part's bytes as read, compared with its index; null when they match. */
export function bytesProblem(bytes: Uint8Array, index: PartIndex | null, sha256: () => string): string | null {
  if (!index || index.bytes === undefined || index.sha256 === undefined) return null;
  if (bytes.length !== index.bytes)
    return `${bytes.length < index.bytes ? 'truncated' : 'grown'}: ${bytes.length} of ${index.bytes} bytes`;
  if (sha256() !== index.sha256) return 'its content changed after it was committed (sha256 mismatch)';
  return null;
}

async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * What is wrong with a committed part, or null. Parts with a recorded checksum are checked by length and sha256
 * (streamed, so memory stays flat); older parts without one are checked by decoding them.
 */
export async function partProblem(file: string): Promise<string | null> {
  const index = await readRecordedIndex(file);
  const stat = await fs.stat(file).catch(() => null);
  if (!stat) return 'missing';
  if (index?.bytes !== undefined && index.sha256 !== undefined) {
    if (stat.size !== index.bytes)
      return `${stat.size < index.bytes ? 'truncated' : 'grown'}: ${stat.size} of ${index.bytes} bytes`;
    return (await fileSha256(file)) === index.sha256
      ? null
      : 'its content changed after it was committed (sha256 mismatch)';
  }
  try {
    const part = decodePart(await fs.readFile(file), file);
    return index && index.rows.length !== part.rows.length
      ? `holds ${part.rows.length} rows, its index ${index.rows.length}`
      : null;
  } catch (error) {
    return `unreadable (${(error as Error).message})`;
  }
}

/** Renames a damaged part and its index aside (`<name>.damaged`); returns the new name of the part. */
export async function setAside(file: string): Promise<string> {
  const aside = `${file}${DAMAGED_SUFFIX}`;
  await fs.rename(file, aside);
  await fs.rename(indexFileOf(file), `${indexFileOf(file)}${DAMAGED_SUFFIX}`).catch(() => {});
  return aside;
}
