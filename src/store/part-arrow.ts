/**
 * A part's Arrow IPC encoding. Apart from part.ts so that apache-arrow (~0.2 s to load) loads with the first part
 * read or written, not with `import('featcache')` or a reader that only plans from the parts' index files.
 */
import {
  type Data,
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
import type { PartContent, PartMeta, Row } from './part.js';

/** The schema metadata key that holds a part's PartMeta. */
export const PART_META_KEY = 'featcache';

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

/** The values of a part's first seven columns, one array per column (a split's name is the same on every row). */
export interface CacheColumnValues {
  paths: string[];
  labels: (number | null)[];
  labelNames: (string | null)[];
  split: string;
  sizes: ArrayLike<number>;
  mtimes: ArrayLike<number>;
  /** Row-major, at least n × dim values. */
  features: Float32Array;
}

const column = <T>(values: T[], type: Utf8 | Int32 | Float64) => vectorFromArray(values as never[], type).data[0]!;

/**
 * The Arrow data of the cache's seven columns for n rows of `schema` (a part's, or an export's that has the same first
 * seven fields): one construction for the part writer and the Arrow/Parquet export.
 */
export function cacheColumns(schema: Schema, n: number, dim: number, v: CacheColumnValues): Data[] {
  const featureType = schema.fields[6]!.type as FixedSizeList<Float32>;
  return [
    column(v.paths, new Utf8()),
    column(v.labels, new Int32()),
    column(v.labelNames, new Utf8()),
    column(
      v.paths.map(() => v.split),
      new Utf8(),
    ),
    column(Array.from(v.sizes), new Float64()),
    column(Array.from(v.mtimes), new Float64()),
    makeData({
      type: featureType,
      length: n,
      nullCount: 0,
      child: makeData({ type: new Float32(), length: n * dim, nullCount: 0, data: v.features.subarray(0, n * dim) }),
    }),
  ];
}

export function encodePart(content: PartContent): Uint8Array {
  const { meta, rows, features } = content;
  const schema = partSchema(meta.dim, meta);
  const n = rows.length;
  const children = [
    ...cacheColumns(schema, n, meta.dim, {
      paths: rows.map((r) => r.path),
      labels: rows.map((r) => r.label),
      labelNames: rows.map((r) => r.labelName),
      split: meta.split,
      sizes: rows.map((r) => r.size),
      mtimes: rows.map((r) => r.mtimeMs),
      features,
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
