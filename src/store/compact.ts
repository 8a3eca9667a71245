/**
 * Compaction: rewrites a split's part files so that they hold only the newest record of each path (live rows and the
 * failure ledger), which makes reading the part files directly — with pyarrow, polars, DuckDB — correct again.
 *
 * Crash safety comes from ordering, not from one big rename. New parts are named to sort right after the last old
 * part (and before any part a later run writes), and hold copies of records that are already the newest; so at every
 * moment the newest-record-wins view of the split is unchanged: while they are renamed in one by one (each index,
 * then its part, each via a temporary name), and while the old parts are removed oldest first (a removal or failure
 * record always outlives the rows it supersedes). A kill -9 anywhere loses nothing; compacting again finishes the job.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { keptFeatures, liveParts } from './live.js';
import {
  type Failure,
  type PartIndex,
  type PartMeta,
  type Row,
  indexFileOf,
  readPartIndex,
  writeSynced,
} from './part.js';
import { encodePart } from './part-arrow.js';
import { DAMAGED_PART_REMEDY, partProblem } from './verify.js';
import { damagedFile } from '../errors.js';
import type { FeatureCache, LatestRecord } from './reader.js';
import { removeDeadTemporaries, sha256Bytes, temporarySibling } from '../util/fsx.js';
import { toolVersions } from '../version.js';

/** A compacted part's name: the last old part's stem, `~c`, a sequence number (`~` sorts after `.arrow`'s `.`). */
const COMPACTED = /~c(\d+)$/;

/**
 * Names for compacted parts: after `last` in sort order, before every name a later run can write (those start with
 * a later timestamp, or continue the same run with a higher sequence number).
 */
export function compactedNames(last: string, count: number): string[] {
  const stem = path.basename(last).replace(/\.arrow$/, '');
  const previous = COMPACTED.exec(stem);
  const base = stem.replace(COMPACTED, '');
  const first = previous ? Number(previous[1]) + 1 : 0;
  return Array.from({ length: count }, (_, k) => `${base}~c${String(first + k).padStart(6, '0')}.arrow`);
}

export interface CompactionStats {
  /** Whether anything was rewritten (false: no superseded records). */
  compacted: boolean;
  partsBefore: number;
  partsAfter: number;
  /** Row records in the part files before, and live rows (what remains). */
  recordsBefore: number;
  rows: number;
  failures: number;
  bytesBefore: number;
  bytesAfter: number;
}

export interface CompactionOptions {
  /** Rows per new part. */
  partRows: number;
  log: (line: string) => void;
}

/**
 * Test hook: `FEATCACHE_TEST_COMPACT_KILL=<step>:<n>` kills the process with SIGKILL at the n-th `index` (index
 * renamed in, its part not yet), `part` (part renamed in) or `removed` (old part removed, its index not yet) step.
 */
function crashPoint(step: 'index' | 'part' | 'removed', n: number): void {
  if (process.env.FEATCACHE_TEST_COMPACT_KILL === `${step}:${n}`) process.kill(process.pid, 'SIGKILL');
}

/**
 * Every part is verified before anything is written: rewriting a damaged part's rows would make the damage
 * permanent (and the part it came from would be deleted). Reading twice is the price of never doing that.
 */
async function verifyAll(cache: FeatureCache, split: string, parts: string[]): Promise<void> {
  await cache.requireNoMissingParts(split);
  for (const file of parts) {
    const problem = await partProblem(file);
    if (problem) throw damagedFile(file, `damaged part file (${problem}); nothing was compacted`, DAMAGED_PART_REMEDY);
  }
}

async function partsSize(files: string[]): Promise<number> {
  let total = 0;
  for (const file of files) {
    for (const f of [file, indexFileOf(file)])
      total += await fs.stat(f).then(
        (s) => s.size,
        () => 0,
      );
  }
  return total;
}

/** Whether any record in the parts is superseded: a row or failure that is not its path's newest, or a removal. */
function superseded(indexes: PartIndex[], latest: Map<string, LatestRecord>): { any: boolean; records: number } {
  let records = 0;
  let live = 0;
  let extra = 0;
  for (const index of indexes) {
    records += index.rows.length;
    extra += index.failures.length + index.removed.length;
  }
  for (const record of latest.values()) if (record.kind !== 'removed') live++;
  return { any: records + extra > live || [...latest.values()].some((r) => r.kind === 'removed'), records };
}

/** The split as it stands: its newest records, whether compaction would drop any, and its stats left unchanged. */
async function splitState(
  cache: FeatureCache,
  split: string,
  parts: string[],
): Promise<{ latest: Map<string, LatestRecord>; any: boolean; failures: Failure[]; unchanged: CompactionStats }> {
  const latest = await cache.latest(split);
  const indexes = await Promise.all(parts.map((p) => readPartIndex(p)));
  const { any, records } = superseded(indexes, latest);
  const failures: Failure[] = [...latest.values()].flatMap((r) =>
    r.kind === 'failure' && r.failure ? [r.failure] : [],
  );
  const rowCount = [...latest.values()].filter((r) => r.kind === 'row').length;
  const bytesBefore = await partsSize(parts);
  const unchanged: CompactionStats = {
    compacted: false,
    partsBefore: parts.length,
    partsAfter: parts.length,
    recordsBefore: records,
    rows: rowCount,
    failures: failures.length,
    bytesBefore,
    bytesAfter: bytesBefore,
  };
  return { latest, any, failures, unchanged };
}

/**
 * Compacts `split` of `cache`. The caller holds the split's locks; see the file comment for why a kill is harmless.
 */
export async function compactParts(
  cache: FeatureCache,
  split: string,
  options: CompactionOptions,
): Promise<CompactionStats> {
  const splitDir = path.join(cache.dir, split);
  await removeCompactionLeftovers(splitDir);
  const parts = await cache.partFiles(split);
  await verifyAll(cache, split, parts);
  const { latest, any, failures, unchanged } = await splitState(cache, split, parts);
  const { recordsBefore: records, rows: rowCount } = unchanged;
  if (parts.length === 0 || !any) return unchanged;

  const partRows = Math.max(1, options.partRows);
  const total = Math.ceil(rowCount / partRows) || (failures.length > 0 ? 1 : 0);
  const names = compactedNames(parts.at(-1)!, total);
  const runId = `compact-${String(Date.now()).padStart(15, '0')}-${process.pid}`;
  const provenance = {
    compactedAt: new Date().toISOString(),
    compactedFrom: parts.map((p) => path.basename(p)),
    compactedWith: toolVersions(),
  };
  const dim = cache.dim;
  const written: string[] = [];
  let rows: Row[] = [];
  let chunks: Float32Array[] = [];

  const flush = async (last: boolean) => {
    const file = path.join(splitDir, names[written.length]!);
    const meta = { split, shard: 'compact', runId, dim, failures: last ? failures : [], removed: [], provenance };
    await writeCompactedPart(file, meta, rows, chunks, written.length + 1);
    written.push(file);
    crashPoint('part', written.length);
    rows = [];
    chunks = [];
  };

  for await (const part of liveParts(cache, split, latest, parts)) {
    const features = keptFeatures(part, dim);
    part.keep.forEach((i, k) => {
      rows.push(part.content.rows[i]!);
      chunks.push(features.subarray(k * dim, (k + 1) * dim));
    });
    while (rows.length >= partRows && written.length < total - 1) {
      const restRows = rows.splice(partRows);
      const restChunks = chunks.splice(partRows);
      await flush(false);
      rows = restRows;
      chunks = restChunks;
    }
  }
  if (total > 0) await flush(true);
  await syncDirectory(splitDir);

  await removeParts(parts);
  options.log(
    `compact ${split}: ${parts.length} parts (${records} row records) → ${written.length} parts (${rowCount} rows, ${failures.length} failures)`,
  );
  return { ...unchanged, compacted: true, partsAfter: written.length, bytesAfter: await partsSize(written) };
}

/**
 * Writes one compacted part and its index, each to a temporary name then renamed, index first: a kill leaves either
 * an index without its part (an interrupted compaction, resumed) or both. `n` counts the parts for the crash tests.
 */
async function writeCompactedPart(
  file: string,
  meta: PartMeta,
  rows: Row[],
  chunks: Float32Array[],
  n: number,
): Promise<void> {
  const features = new Float32Array(rows.length * meta.dim);
  chunks.reduce((offset, f) => (features.set(f, offset), offset + f.length), 0);
  const bytes = encodePart({ meta, rows, features });
  const index: PartIndex = {
    dim: meta.dim,
    rows: rows.map((r) => ({ path: r.path, size: r.size, mtimeMs: r.mtimeMs })),
    failures: meta.failures,
    removed: [],
    bytes: bytes.length,
    sha256: sha256Bytes(bytes),
  };
  const indexTmp = temporarySibling(indexFileOf(file));
  const partTmp = temporarySibling(file);
  await writeSynced(indexTmp, JSON.stringify(index));
  await writeSynced(partTmp, bytes);
  await fs.rename(indexTmp, indexFileOf(file));
  crashPoint('index', n);
  await fs.rename(partTmp, file);
}

/**
 * Removes the compacted-away parts, oldest first: a later part's removal or failure record must outlive the rows it
 * supersedes. A part goes to a temporary name before its index goes, so a kill between leaves an interrupted
 * removal, never a missing part.
 */
async function removeParts(parts: string[]): Promise<void> {
  for (const [k, file] of parts.entries()) {
    const going = temporarySibling(file);
    await fs.rename(file, going);
    crashPoint('removed', k + 1);
    await fs.rm(indexFileOf(file), { force: true });
    await fs.rm(going, { force: true });
  }
}

/** So the renames are durable before the old parts go. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r').catch(() => null);
  await handle?.sync().catch(() => {});
  await handle?.close();
}

/**
 * What a killed compaction can leave: temporaries of dead processes and a compacted index whose part was never
 * renamed in. (Old parts' indexes whose part was removed are ignored by readers and removed here too.)
 */
async function removeCompactionLeftovers(dir: string): Promise<void> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  await removeDeadTemporaries(dir, names, (of) => of.startsWith('part-'));
  for (const name of names) {
    // Only an interrupted step leaves an index without its part (the part is under a temporary name); an index whose
    // part is simply gone is damage, which compaction refuses rather than hides.
    const part = name.replace(/\.index\.json$/, '.arrow');
    const orphanIndex =
      name.startsWith('part-') &&
      name.endsWith('.index.json') &&
      !names.includes(part) &&
      names.some((n) => n.startsWith(`.${part}.`) && n.endsWith('.tmp'));
    if (orphanIndex) await fs.rm(path.join(dir, name), { force: true });
  }
}
