/**
 * One part file: an Arrow IPC file with a batch of rows, the failures of that batch and the paths it removes, so a
 * part is the unit that is committed atomically — either all of a batch's outcomes are in the cache or none are.
 */
import * as fs from 'node:fs/promises';
import {
  Field,
  FixedSizeList,
  Float32,
  Float64,
  Int32,
  RecordBatch,
  Schema,
  Struct,
  Table,
  Utf8,
  makeData,
  tableFromIPC,
  tableToIPC,
  vectorFromArray,
} from 'apache-arrow';
import { sha256Bytes, temporarySibling, writeFileAtomic } from '../util/fsx.js';

export const PART_META_KEY = 'featcache';

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

export function partSchema(dim: number, meta: PartMeta): Schema {
  const fields = [
    new Field('path', new Utf8(), false),
    new Field('label', new Int32(), true),
    new Field('label_name', new Utf8(), true),
    new Field('split', new Utf8(), false),
    new Field('file_size', new Float64(), false),
    new Field('file_mtime_ms', new Float64(), false),
    new Field('feature', new FixedSizeList(dim, new Field('item', new Float32(), false)), false),
    // Last, so readers of the older seven columns see the same layout.
    new Field('content_sha256', new Utf8(), true),
  ];
  return new Schema(fields, new Map([[PART_META_KEY, JSON.stringify(meta)]]));
}

export function encodePart(content: PartContent): Uint8Array {
  const { meta, rows, features } = content;
  const schema = partSchema(meta.dim, meta);
  const n = rows.length;
  const column = <T>(values: T[], type: Utf8 | Int32 | Float64) => vectorFromArray(values as never[], type).data[0]!;
  const featureType = schema.fields[6]!.type as FixedSizeList<Float32>;
  const children = [
    column(
      rows.map((r) => r.path),
      new Utf8(),
    ),
    column(
      rows.map((r) => r.label),
      new Int32(),
    ),
    column(
      rows.map((r) => r.labelName),
      new Utf8(),
    ),
    column(
      rows.map(() => meta.split),
      new Utf8(),
    ),
    column(
      rows.map((r) => r.size),
      new Float64(),
    ),
    column(
      rows.map((r) => r.mtimeMs),
      new Float64(),
    ),
    makeData({
      type: featureType,
      length: n,
      nullCount: 0,
      child: makeData({
        type: new Float32(),
        length: n * meta.dim,
        nullCount: 0,
        data: features.subarray(0, n * meta.dim),
      }),
    }),
    column(
      rows.map((r) => r.contentSha256 ?? null),
      new Utf8(),
    ),
  ];
  const batch = new RecordBatch(
    schema,
    makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children }),
  );
  return tableToIPC(new Table(schema, [batch]), 'file');
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

export function decodePart(bytes: Uint8Array, file: string): PartContent {
  const table = tableFromIPC(bytes);
  const metaText = table.schema.metadata.get(PART_META_KEY);
  if (!metaText) throw new Error(`${file}: not a featcache part (no '${PART_META_KEY}' schema metadata)`);
  const meta = JSON.parse(metaText) as PartMeta;
  const paths = (table.getChild('path')?.toArray() as string[] | undefined) ?? [];
  const labels = table.getChild('label');
  const names = table.getChild('label_name');
  const sizes = table.getChild('file_size');
  const mtimes = table.getChild('file_mtime_ms');
  const hashes = table.getChild('content_sha256');
  const rows: Row[] = paths.map((p, i) => ({
    path: p,
    label: (labels?.get(i) as number | null) ?? null,
    labelName: (names?.get(i) as string | null) ?? null,
    size: Number(sizes?.get(i) ?? 0),
    mtimeMs: Number(mtimes?.get(i) ?? 0),
    ...(hashes?.get(i) ? { contentSha256: hashes.get(i) as string } : {}),
  }));
  const features = new Float32Array(rows.length * meta.dim);
  let offset = 0;
  for (const data of table.getChild('feature')?.data ?? []) {
    const child = data.children[0]!;
    const start = child.offset + data.offset * meta.dim;
    const values = (child.values as Float32Array).subarray(start, start + data.length * meta.dim);
    features.set(values, offset);
    offset += data.length * meta.dim;
  }
  if (offset !== features.length)
    throw new Error(`${file}: feature column holds ${offset} values, expected ${features.length}`);
  return { meta, rows, features };
}

export async function readPart(file: string): Promise<PartContent> {
  return decodePart(await fs.readFile(file), file);
}
