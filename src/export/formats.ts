/**
 * Export writers, one per format, each fed batch by batch so memory does not grow with the number of rows.
 * Floats are written with 9 significant digits, enough for every float32 to round-trip exactly.
 */
import type { FileHandle } from 'node:fs/promises';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

export const FORMATS = ['libsvm', 'svmlight', 'npy', 'csv'] as const;
export type Format = (typeof FORMATS)[number];
/** Label written for rows without one (unlabelled images); class indices are 0-based. */
export const UNLABELLED = -1;

export interface Batch {
  features: Float32Array;
  labels: Int32Array;
  paths: string[];
  count: number;
  dim: number;
}

export interface ExportWriter {
  write(batch: Batch): Promise<void>;
  close(): Promise<void>;
}

/** Shortest of `toPrecision(9)`'s output that still names the same float32: round-trips, and stays short. */
export function formatFloat32(value: number): string {
  if (value === 0) return '0';
  const text = value.toPrecision(9);
  const [mantissa, exponent] = text.split('e');
  const trimmed = mantissa!.includes('.') ? mantissa!.replace(/0+$/, '').replace(/\.$/, '') : mantissa!;
  return exponent ? `${trimmed}e${exponent}` : trimmed;
}

function csvField(text: string): string {
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

class TextWriter implements ExportWriter {
  private constructor(private readonly handle: FileHandle, private readonly line: (b: Batch, r: number) => string) {}
  static async open(file: string, header: string | null, line: (b: Batch, r: number) => string): Promise<TextWriter> {
    const handle = await fs.open(file, 'w');
    if (header) await handle.write(`${header}\n`);
    return new TextWriter(handle, line);
  }
  async write(batch: Batch): Promise<void> {
    const lines: string[] = [];
    for (let r = 0; r < batch.count; r++) lines.push(this.line(batch, r));
    await this.handle.write(`${lines.join('\n')}\n`);
  }
  async close(): Promise<void> {
    await this.handle.sync();
    await this.handle.close();
  }
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
    return [csvField(batch.paths[r]!), String(label), csvField(label >= 0 ? (classes[label] ?? '') : ''), ...values].join(',');
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

/** A directory: features.npy (float32 [N, D]), labels.npy (int32 [N]), paths.txt, classes.txt. */
class NpyWriter implements ExportWriter {
  private written = 0;
  private constructor(
    private readonly features: FileHandle,
    private readonly labels: FileHandle,
    private readonly paths: FileHandle,
    private readonly expected: number,
  ) {}
  static async open(dir: string, count: number, dim: number): Promise<NpyWriter> {
    await fs.mkdir(dir, { recursive: true });
    const features = await fs.open(path.join(dir, 'features.npy'), 'w');
    const labels = await fs.open(path.join(dir, 'labels.npy'), 'w');
    const paths = await fs.open(path.join(dir, 'paths.txt'), 'w');
    await features.write(npyHeader('<f4', [count, dim]));
    await labels.write(npyHeader('<i4', [count]));
    return new NpyWriter(features, labels, paths, count);
  }
  async write(batch: Batch): Promise<void> {
    // Arrow and npy are both little-endian float32: the bytes go straight through.
    await this.features.write(new Uint8Array(batch.features.buffer, batch.features.byteOffset, batch.count * batch.dim * 4));
    await this.labels.write(new Uint8Array(batch.labels.buffer, batch.labels.byteOffset, batch.count * 4));
    await this.paths.write(`${batch.paths.join('\n')}\n`);
    this.written += batch.count;
  }
  async close(): Promise<void> {
    if (this.written !== this.expected) throw new Error(`wrote ${this.written} rows, header says ${this.expected}`);
    for (const h of [this.features, this.labels, this.paths]) {
      await h.sync();
      await h.close();
    }
  }
}

export async function openWriter(format: Format, target: string, count: number, dim: number, classes: string[]): Promise<ExportWriter> {
  switch (format) {
    case 'libsvm':
    case 'svmlight':
      return TextWriter.open(target, null, libsvmLine);
    case 'csv':
      return TextWriter.open(target, ['path', 'label', 'label_name', ...Array.from({ length: dim }, (_, d) => `f${d}`)].join(','), csvLine(classes));
    case 'npy':
      return NpyWriter.open(target, count, dim);
  }
}
