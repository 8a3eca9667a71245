/**
 * Checking committed parts against what their index recorded at commit, and setting damaged ones aside. A part and
 * its index must agree — length, sha256, and the rows, failures and removals the index lists — or the part is
 * damaged; so is a part whose index is missing or records no checksum, and an index whose part is gone. This file is
 * the one way every reader (export, compact, train-head, `info --check`, extract's set-aside) gets at a part's rows:
 * damage is refused with the remedy, never read as different numbers. Extract sets a damaged part aside under a
 * `.damaged` name — never deleting it — and extracts its rows again.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { damagedFile } from '../errors.js';
import { type PartContent, type PartIndex, indexFileOf, readRecordedIndex } from './part.js';

export const DAMAGED_SUFFIX = '.damaged';

/** What to do about a damaged part, said the same way everywhere. */
export const DAMAGED_PART_REMEDY =
  "re-run extract for this split: it sets the part aside (renamed *.damaged, not deleted) and extracts its rows again; 'featcache info --check' lists damaged parts";

/** Read size while hashing: large enough to be fast, small enough that nothing is read past a wrong length. */
const CHUNK = 4 * 1024 * 1024;

export type Verified = { content: PartContent; problem?: undefined } | { problem: string; content?: undefined };

/**
 * Reads exactly `expected` bytes of `file`, hashing while it reads. A file of another length is refused from its
 * size before anything is read, so a damaged (or huge) part costs nothing and never reaches the Arrow decoder.
 */
async function readHashed(file: string, expected: number): Promise<{ bytes: Buffer; sha256: string } | string> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT'
      ? 'missing'
      : `unreadable (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`;
  }
  try {
    const { size } = await handle.stat();
    if (size !== expected) return `${size < expected ? 'truncated' : 'grown'}: ${size} of ${expected} bytes`;
    const bytes = Buffer.alloc(expected);
    const hash = createHash('sha256');
    let offset = 0;
    while (offset < expected) {
      const { bytesRead } = await handle.read(bytes, offset, Math.min(CHUNK, expected - offset), offset);
      if (bytesRead === 0) return `truncated while read: ${offset} of ${expected} bytes`;
      hash.update(bytes.subarray(offset, offset + bytesRead));
      offset += bytesRead;
    }
    return { bytes, sha256: hash.digest('hex') };
  } finally {
    await handle.close();
  }
}

const sameRecords = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Where a decoded part and its index disagree; null when they agree. */
function disagreement(content: PartContent, index: PartIndex): string | null {
  if (content.meta.dim !== index.dim)
    return `its index says ${index.dim}-d features, the part holds ${content.meta.dim}-d`;
  if (content.rows.length !== index.rows.length)
    return `holds ${content.rows.length} rows, its index lists ${index.rows.length}`;
  const row = content.rows.findIndex((r, i) => {
    const listed = index.rows[i]!;
    return r.path !== listed.path || r.size !== listed.size || r.mtimeMs !== listed.mtimeMs;
  });
  if (row >= 0) return `row ${row} (${content.rows[row]!.path}) differs from its index`;
  if (!sameRecords(content.meta.failures, index.failures)) return 'its failure records differ from its index';
  if (!sameRecords(content.meta.removed, index.removed)) return 'its removal records differ from its index';
  return null;
}

/** Reads a part and checks it against its index: its content, or what is wrong with it. */
export async function verifyPart(file: string): Promise<Verified> {
  const index = await readRecordedIndex(file);
  if (!index) {
    const present = await fs.stat(file).then(
      () => true,
      () => false,
    );
    return { problem: present ? `its index ${path.basename(indexFileOf(file))} is missing or unreadable` : 'missing' };
  }
  if (!Number.isSafeInteger(index.bytes) || typeof index.sha256 !== 'string')
    return { problem: 'its index records no length and sha256, so its content cannot be verified' };
  const read = await readHashed(file, index.bytes!);
  if (typeof read === 'string') return { problem: read };
  if (read.sha256 !== index.sha256) return { problem: 'its content changed after it was committed (sha256 mismatch)' };
  const { decodePart } = await import('./part-arrow.js');
  let content: PartContent;
  try {
    content = decodePart(read.bytes, file);
  } catch (error) {
    return { problem: `unreadable (${(error as Error).message})` };
  }
  const problem = disagreement(content, index);
  return problem ? { problem } : { content };
}

/** A verified part's content; a damaged part is refused with the remedy (exit 1). */
export async function readVerifiedPart(file: string): Promise<PartContent> {
  const verified = await verifyPart(file);
  if (verified.problem !== undefined)
    throw damagedFile(file, `damaged part file (${verified.problem})`, DAMAGED_PART_REMEDY);
  return verified.content;
}

/** What is wrong with a committed part, or null. */
export async function partProblem(file: string): Promise<string | null> {
  return (await verifyPart(file)).problem ?? null;
}

/**
 * Index files in `dir` whose part is gone: the part was deleted or lost. An index whose part still sits under a
 * temporary name (`.part-….arrow.<pid>.<time>.tmp`) is a commit or a compaction removal that was interrupted — not
 * committed, not damage — and is left to extract and compact to clear.
 */
export async function missingParts(dir: string): Promise<string[]> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const present = new Set(names);
  const temporaries = names.filter((n) => n.startsWith('.part-') && n.endsWith('.tmp'));
  return names
    .filter((n) => n.startsWith('part-') && n.endsWith('.index.json'))
    .map((n) => n.replace(/\.index\.json$/, '.arrow'))
    .filter((part) => !present.has(part) && !temporaries.some((t) => t.startsWith(`.${part}.`)))
    .sort()
    .map((part) => path.join(dir, part));
}

/** Renames a damaged part and its index aside (`<name>.damaged`); returns the new name of the part. */
export async function setAside(file: string): Promise<string> {
  const aside = `${file}${DAMAGED_SUFFIX}`;
  await fs.rename(file, aside);
  await fs.rename(indexFileOf(file), `${indexFileOf(file)}${DAMAGED_SUFFIX}`).catch(() => {});
  return aside;
}
