/**
 * One part file: an Arrow IPC file with a batch of rows, the failures of that batch and the paths it removes, so a
 * part is the unit that is committed atomically — either all of a batch's outcomes are in the cache or none are.
 */
import * as fs from 'node:fs/promises';
import { sha256Bytes, temporarySibling, writeFileAtomic } from '../util/fsx.js';

export interface Row {
  path: string;
  label: number | null;
  labelName: string | null;
  size: number;
  mtimeMs: number;
  /** sha256 of the image's bytes as read (exact-duplicate detection); absent in parts written before 0.3. */
  contentSha256?: string | null;
}

export interface Failure {
  path: string;
  /** Which step failed: read, decode, preprocess, infer. */
  stage: string;
  message: string;
  /** HTTP status of the last attempt, for images fetched from URLs. */
  status?: number;
  size: number;
  mtimeMs: number;
}

export interface PartMeta {
  split: string;
  shard: string;
  runId: string;
  dim: number;
  failures: Failure[];
  removed: string[];
  provenance: Record<string, unknown>;
}

export interface PartContent {
  meta: PartMeta;
  rows: Row[];
  /** rows.length × dim, row-major. */
  features: Float32Array;
}

/**
 * What a part holds without its features: enough to plan an incremental run or merge a split without reading
 * gigabytes of vectors. Written (atomically) before its part; an index whose part is missing is ignored.
 */
export interface PartIndex {
  dim: number;
  rows: { path: string; size: number; mtimeMs: number }[];
  failures: Failure[];
  removed: string[];
  /** Length and sha256 of the part file as committed, so damage after the commit is detected (absent before 0.2). */
  bytes?: number;
  sha256?: string;
}

export function indexFileOf(partFile: string): string {
  return partFile.replace(/\.arrow$/, '.index.json');
}

export async function writePart(file: string, content: PartContent): Promise<void> {
  const { encodePart } = await import('./part-arrow.js');
  const bytes = encodePart(content);
  const index: PartIndex = {
    dim: content.meta.dim,
    rows: content.rows.map((r) => ({ path: r.path, size: r.size, mtimeMs: r.mtimeMs })),
    failures: content.meta.failures,
    removed: content.meta.removed,
    bytes: bytes.length,
    sha256: sha256Bytes(bytes),
  };
  // The part is written under a temporary name before its index is renamed in, so an index whose part is absent is
  // either an interrupted commit (its temporary is still there: readers ignore it) or damage (see missingParts).
  const partTmp = temporarySibling(file);
  let indexIn = false;
  try {
    await writeSynced(partTmp, bytes);
    await writeFileAtomic(indexFileOf(file), (tmp) => fs.writeFile(tmp, JSON.stringify(index)));
    indexIn = true;
    await fs.rename(partTmp, file);
  } catch (error) {
    if (!indexIn) await fs.rm(partTmp, { force: true });
    throw error;
  }
}

/** Writes and fsyncs a whole file. */
export async function writeSynced(file: string, data: string | Uint8Array): Promise<void> {
  const handle = await fs.open(file, 'w');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A part's recorded index, or null when it has none (or an unreadable one). */
export async function readRecordedIndex(file: string): Promise<PartIndex | null> {
  try {
    const index = JSON.parse(await fs.readFile(indexFileOf(file), 'utf8')) as PartIndex;
    return Array.isArray(index.rows) &&
      Array.isArray(index.failures) &&
      Array.isArray(index.removed) &&
      Number.isInteger(index.dim)
      ? index
      : null;
  } catch {
    return null;
  }
}

/** A part's index; parts written without one (or with a damaged one) are read in full instead. */
export async function readPartIndex(file: string): Promise<PartIndex> {
  const recorded = await readRecordedIndex(file);
  if (recorded) return recorded;
  const part = await readPart(file);
  return { dim: part.meta.dim, rows: part.rows, failures: part.meta.failures, removed: part.meta.removed };
}

export async function readPart(file: string): Promise<PartContent> {
  const { decodePart } = await import('./part-arrow.js');
  return decodePart(await fs.readFile(file), file);
}
