/**
 * Export writers, one per format, each fed batch by batch so memory does not grow with the number of rows.
 * Text floats are written with 9 significant digits, enough for every float32 to round-trip exactly.
 */
import * as fs from 'node:fs/promises';
import { RecordBatch, RecordBatchFileWriter, Schema, Struct, Table, makeData, tableToIPC } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { cacheColumns, partSchema } from '../store/part-arrow.js';
import { type OutputDir, type OutputFile, type OutputSink, fileSink } from '../util/output.js';
import { featcacheVersion } from '../version.js';
import { csvText } from '../util/csv.js';
import type { Format } from './format-names.js';

export { FORMATS, type Format, UNLABELLED } from './format-names.js';

export interface Batch {
  features: Float32Array;
  labels: Int32Array;
  paths: string[];
  count: number;
  dim: number;
}

/** A batch with every column of the cache: what Arrow and Parquet exports carry besides features and labels. */
export interface ExportBatch extends Batch {
  split: string;
  /** Class name per row, null when unlabelled. */
  labelNames: (string | null)[];
  /** Source file size and mtime per row, as cached. */
  sizes: Float64Array;
  mtimes: Float64Array;
}

/** Shortest of `toPrecision(9)`'s output that still names the same float32: round-trips, and stays short. */
export function formatFloat32(value: number): string {
  if (value === 0) return '0';
  const text = value.toPrecision(9);
  const [mantissa, exponent] = text.split('e');
  const trimmed = mantissa!.includes('.') ? mantissa!.replace(/0+$/, '').replace(/\.$/, '') : mantissa!;
  return exponent ? `${trimmed}e${exponent}` : trimmed;
}

const csvField = csvText;

/** Opens an output's node, hands the handle to `write`, and always closes it; commit/abort is the caller's. */
async function withHandle(output: OutputFile | string, write: (handle: OutputSink) => Promise<void>): Promise<void> {
  const handle = typeof output === 'string' ? fileSink(await fs.open(output, 'w')) : await output.open();
  try {
    await write(handle);
  } finally {
    await handle.close();
  }
}

/** One line per row, written a batch at a time. */
function writeText(
  output: OutputFile,
  header: string | null,
  line: (b: Batch, r: number) => string,
  batches: AsyncIterable<ExportBatch>,
): Promise<void> {
  return withHandle(output, async (handle) => {
    if (header) await handle.write(`${header}\n`);
    for await (const batch of batches) {
      const lines: string[] = [];
      for (let r = 0; r < batch.count; r++) lines.push(line(batch, r));
      await handle.write(`${lines.join('\n')}\n`);
    }
  });
}

/** `label index:value …`, 1-based ascending indices, zeros omitted (pooled ReLU features are sparse). */
function libsvmLine(batch: Batch, r: number): string {
  const parts = [String(batch.labels[r])];
  const o = r * batch.dim;
  for (let d = 0; d < batch.dim; d++) {
    const v = batch.features[o + d]!;
    if (v !== 0) parts.push(`${d + 1}:${formatFloat32(v)}`);
  }
  return parts.join(' ');
}

function csvLine(classes: string[]) {
  return (batch: Batch, r: number) => {
    const label = batch.labels[r]!;
    const values = Array.from(batch.features.subarray(r * batch.dim, (r + 1) * batch.dim), formatFloat32);
    return [
      csvField(batch.paths[r]!),
      String(label),
      csvField(label >= 0 ? (classes[label] ?? '') : ''),
      ...values,
    ].join(',');
  };
}

/** NumPy .npy v1.0 header: magic, version, little-endian length, dict padded with spaces to a multiple of 64. */
export function npyHeader(descr: string, shape: number[]): Buffer {
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const unpadded = 10 + dict.length + 1;
  const padded = Math.ceil(unpadded / 64) * 64;
  const header = Buffer.alloc(padded, 0x20);
  header.write('\x93NUMPY', 0, 'latin1');
  header[6] = 1;
  header[7] = 0;
  header.writeUInt16LE(padded - 10, 8);
  header.write(dict, 10, 'latin1');
  header[padded - 1] = 0x0a;
  return header;
}

/** A directory: features.npy (float32 [N, D]), labels.npy (int32 [N]), paths.txt; the header needs N up front. */
async function writeNpy(dir: OutputDir, spec: WriterSpec, batches: AsyncIterable<ExportBatch>): Promise<void> {
  let written = 0;
  await withHandle(dir.file('features.npy'), (features) =>
    withHandle(dir.file('labels.npy'), (labels) =>
      withHandle(dir.file('paths.txt'), async (paths) => {
        await features.write(npyHeader('<f4', [spec.count, spec.dim]));
        await labels.write(npyHeader('<i4', [spec.count]));
        for await (const batch of batches) {
          // Arrow and npy are both little-endian float32: the bytes go straight through.
          await features.write(
            new Uint8Array(batch.features.buffer, batch.features.byteOffset, batch.count * batch.dim * 4),
          );
          await labels.write(new Uint8Array(batch.labels.buffer, batch.labels.byteOffset, batch.count * 4));
          await paths.write(`${batch.paths.join('\n')}\n`);
          written += batch.count;
        }
      }),
    ),
  );
  if (written !== spec.count) throw new Error(`wrote ${written} rows, the npy header says ${spec.count}`);
}

/**
 * The cache's columns (see partSchema), with the export's key-value metadata instead of a part's. The images'
 * content hashes stay in the cache (duplicates reads them there): an export is features for other tools.
 */
export function exportSchema(dim: number, metadata: Record<string, string>): Schema {
  const fields = partSchema(dim, {
    split: '',
    shard: '',
    runId: '',
    dim,
    failures: [],
    removed: [],
    provenance: {},
  }).fields.filter((f) => f.name !== 'content_sha256');
  return new Schema(fields, new Map(Object.entries(metadata)));
}

/** An Arrow record batch of the cache's columns; unlabelled rows get a null label, as in the cache. */
export function recordBatchOf(schema: Schema, batch: ExportBatch): RecordBatch {
  const n = batch.count;
  const children = cacheColumns(schema, n, batch.dim, {
    paths: batch.paths,
    labels: Array.from(batch.labels, (l) => (l < 0 ? null : l)),
    labelNames: batch.labelNames,
    split: batch.split,
    sizes: batch.sizes,
    mtimes: batch.mtimes,
    features: batch.features,
  });
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children }));
}

/**
 * apache-arrow's file writer queues its output for an async reader; this one hands over each batch's bytes as soon
 * as they are encoded, so the caller writes them before encoding the next batch and memory stays at one batch.
 */
class DrainingFileWriter extends RecordBatchFileWriter {
  private chunks: Uint8Array[] = [];
  protected override _write(chunk: ArrayBufferView): this {
    if (this._started && chunk.byteLength > 0) {
      this.chunks.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this._position += chunk.byteLength;
    }
    return this;
  }
  take(): Uint8Array[] {
    const chunks = this.chunks;
    this.chunks = [];
    return chunks;
  }
}

/** An Arrow IPC file, written batch by batch (the footer only holds batch offsets). */
function writeArrow(output: OutputFile, spec: WriterSpec, batches: AsyncIterable<ExportBatch>): Promise<void> {
  const schema = exportSchema(spec.dim, spec.metadata);
  return withHandle(output, async (handle) => {
    const writer = new DrainingFileWriter();
    writer.reset(undefined, schema);
    let wrote = false;
    for await (const batch of batches) {
      if (batch.count === 0) continue;
      writer.write(recordBatchOf(schema, batch));
      for (const chunk of writer.take()) await handle.write(chunk);
      wrote = true;
    }
    // The job refuses empty splits; a schema-only file would need a separate path through the writer.
    if (!wrote) throw new Error('no rows to write');
    writer.close();
    for (const chunk of writer.take()) await handle.write(chunk);
  });
}

/**
 * Rows per Parquet row group: the writer buffers one group before encoding it, so this bounds its memory (16 MiB of
 * features: 8192 rows of 512-d, 2048 of 2048-d; big enough for readers to skim, small enough to stream).
 */
export function parquetRowGroupRows(dim: number): number {
  return Math.max(1, Math.floor((16 * 2 ** 20) / (dim * 4)));
}

/**
 * A Parquet file through parquet-wasm's streaming writer (arrow-rs): record batches go in as the consumer pulls
 * them, row groups of parquetRowGroupRows rows come out, so memory is bounded by one row group plus one cache part.
 */
async function writeParquet(output: OutputFile, spec: WriterSpec, batches: AsyncIterable<ExportBatch>): Promise<void> {
  const schema = exportSchema(spec.dim, spec.metadata);
  const iterator = batches[Symbol.asyncIterator]();
  // What went in, so a source failure the wasm writer might swallow can never pass for a complete file.
  let rows = 0;
  let finished = false;
  const failures: unknown[] = [];
  const source = new ReadableStream<parquet.RecordBatch>(
    {
      async pull(controller) {
        try {
          for (;;) {
            const next = await iterator.next();
            if (next.done) {
              finished = true;
              return controller.close();
            }
            if (next.value.count === 0) continue;
            rows += next.value.count;
            const table = parquet.Table.fromIPCStream(
              tableToIPC(new Table(schema, [recordBatchOf(schema, next.value)]), 'stream'),
            );
            try {
              return controller.enqueue(table.recordBatch(0));
            } finally {
              table.free();
            }
          }
        } catch (error) {
          failures.push(error);
          controller.error(error);
        }
      },
    },
    { highWaterMark: 0 },
  );
  const properties = new parquet.WriterPropertiesBuilder()
    .setMaxRowGroupSize(parquetRowGroupRows(spec.dim))
    .setCompression(parquet.Compression.SNAPPY)
    // Dictionaries pay off only for the few repeated strings; on unique paths and float features they are wasted work.
    .setDictionaryEnabled(false)
    .setColumnDictionaryEnabled('label_name', true)
    .setColumnDictionaryEnabled('split', true)
    .setKeyValueMetadata(new Map(Object.entries(spec.metadata)))
    .setCreatedBy(`featcache ${featcacheVersion} (parquet-wasm)`)
    .build();
  try {
    const bytes = await parquet.transformParquetStream(source, properties);
    await withHandle(output, async (handle) => {
      for await (const chunk of bytes as unknown as AsyncIterable<Uint8Array>) await handle.write(chunk);
    });
  } catch (error) {
    // The wasm writer rewords a source failure (e.g. a damaged part) as its own; the source's says what to do.
    throw (failures[0] ?? error) as Error;
  }
  if (failures.length > 0) throw failures[0];
  if (!finished || rows !== spec.count) throw new Error(`parquet writer stopped after ${rows} of ${spec.count} rows`);
}

/** What every writer needs to know before the first row. */
export interface WriterSpec {
  /** Rows that will be written (npy's header needs it). */
  count: number;
  dim: number;
  classes: string[];
  /** Key-value metadata for formats that carry it (Arrow, Parquet): class names and provenance. */
  metadata: Record<string, string>;
}

/** Formats that write a directory of files rather than one file. */
export const DIRECTORY_FORMATS: readonly Format[] = ['npy'];

/** Writes `batches` in `format`; the caller commits or aborts `output`. */
export async function writeExport(
  format: Format,
  output: OutputFile | OutputDir,
  spec: WriterSpec,
  batches: AsyncIterable<ExportBatch>,
): Promise<void> {
  if (format === 'npy') return writeNpy(output as OutputDir, spec, batches);
  const file = output as OutputFile;
  switch (format) {
    case 'libsvm':
    case 'svmlight':
      return writeText(file, null, libsvmLine, batches);
    case 'csv':
      return writeText(
        file,
        ['path', 'label', 'label_name', ...Array.from({ length: spec.dim }, (_, d) => `f${d}`)].join(','),
        csvLine(spec.classes),
        batches,
      );
    case 'arrow':
      return writeArrow(file, spec, batches);
    case 'parquet':
      return writeParquet(file, spec, batches);
  }
}
