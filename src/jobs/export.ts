/**
 * The export job: store → export. Streams a split out of the cache part by part (memory does not grow with the
 * number of rows) into formats other tools read, and makes the result visible only when it is complete. Outputs
 * follow src/util/output.ts: featcache replaces only what it can prove it wrote.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, invalidParameter, oneOf, optionName, ExitCode } from '../errors.js';
import {
  DIRECTORY_FORMATS,
  type ExportBatch,
  FORMATS,
  type Format,
  UNLABELLED,
  type WriterSpec,
  writeExport,
} from '../export/formats.js';
import { type LivePart, keptFeatures, liveParts } from '../store/live.js';
import {
  NORMALIZATIONS,
  type Normalization,
  type NormalizationKind,
  StandardAccumulator,
  applyNormalization,
} from '../head/normalize.js';
import { FeatureCache, type LatestRecord } from '../store/reader.js';
import {
  type OutputDir,
  type OutputFile,
  openOutputFile,
  prepareOutputDir,
  requireOursOrAbsent,
  writeOutputFile,
} from '../util/output.js';
import { sha256Bytes } from '../util/fsx.js';
import { withDefaults } from '../util/options.js';
import { toolVersions } from '../version.js';
import { DEFAULT_EXPORT_OPTIONS } from './defaults.js';

export { DEFAULT_EXPORT_OPTIONS };

export interface ExportOptions {
  /** Feature cache directory. */
  cache: string;
  /** Cached split to export. */
  split: string;
  format: Format;
  /** Output file (npy: output directory); `-`, a device or a FIFO is written through. */
  out: string;
  normalize: NormalizationKind;
  /** Reuse saved `standard` statistics (a stats.json of an earlier export) instead of fitting them. */
  stats: string | null;
  /** The split `standard` statistics are fitted on: train, so val statistics never leak into train. */
  fitSplit: string;
  log: (line: string) => void;
}

/** Marker that makes a directory output featcache's to replace (see prepareOutputDir). */
export const EXPORT_MARKER = '.featcache-export.json';

/** Formats that carry class names and provenance inside the file (key-value metadata), so need no side files. */
const SELF_DESCRIBING: readonly Format[] = ['parquet', 'arrow'];

/** Key-value metadata keys of Arrow and Parquet exports. */
export const METADATA_KEYS = Object.freeze({ classes: 'featcache.classes', provenance: 'featcache.provenance' });

export interface ExportResult {
  split: string;
  format: Format;
  rows: number;
  dim: number;
  files: string[];
  /** Bytes written; null when written through to a device, FIFO or stdout. */
  bytes: number | null;
  seconds: number;
  rowsPerSecond: number;
  mbPerSecond: number | null;
  normalization: { kind: NormalizationKind; statsFile: string | null; fittedOn: string | null };
}

async function loadStats(file: string, dim: number): Promise<Normalization> {
  let stats: Normalization;
  try {
    stats = JSON.parse(await fs.readFile(file, 'utf8')) as Normalization;
  } catch (error) {
    throw invalidParameter(
      'stats',
      'a readable stats.json',
      `${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
    );
  }
  if (stats.kind !== 'standard' || stats.mean?.length !== dim || stats.std?.length !== dim) {
    throw invalidParameter(
      'stats',
      `standard statistics with ${dim} means and stds (written by an earlier export with normalize standard)`,
      file,
    );
  }
  return { kind: stats.kind, mean: stats.mean, std: stats.std };
}

async function fitStatistics(cache: FeatureCache, asked: string): Promise<Normalization> {
  const split = await cache.resolveSplit(asked);
  if (!(await cache.splits()).includes(split)) {
    throw invalidParameter('fitSplit', `a split of ${cache.dir} to fit standard statistics on, or stats FILE`, split);
  }
  const accumulator = new StandardAccumulator(cache.dim);
  for await (const batch of cache.batches(split)) accumulator.add(batch.features, batch.count);
  return accumulator.result();
}

function validate(options: ExportOptions): void {
  if (!(FORMATS as readonly string[]).includes(options.format))
    throw invalidParameter('format', oneOf(FORMATS), options.format);
  if (!(NORMALIZATIONS as readonly string[]).includes(options.normalize))
    throw invalidParameter('normalize', oneOf(NORMALIZATIONS), options.normalize);
  if (typeof options.out !== 'string' || options.out === '')
    throw invalidParameter('out', 'an output path', options.out);
  if (typeof options.split !== 'string' || options.split === '')
    throw invalidParameter('split', 'a split name', options.split);
}

/** The live rows of one part as an export batch, normalised. */
function exportBatch(part: LivePart, split: string, dim: number, normalization: Normalization): ExportBatch {
  const rows = part.keep.map((i) => part.content.rows[i]!);
  const features = keptFeatures(part, dim);
  applyNormalization(normalization, features, rows.length, dim);
  return {
    split,
    count: rows.length,
    dim,
    features,
    labels: Int32Array.from(rows, (r) => r.label ?? UNLABELLED),
    paths: rows.map((r) => r.path),
    labelNames: rows.map((r) => r.labelName),
    sizes: Float64Array.from(rows, (r) => r.size),
    mtimes: Float64Array.from(rows, (r) => r.mtimeMs),
  };
}

async function* exportBatches(
  cache: FeatureCache,
  split: string,
  latest: Map<string, LatestRecord>,
  normalization: Normalization,
): AsyncGenerator<ExportBatch> {
  for await (const part of liveParts(cache, split, latest)) {
    if (part.keep.length > 0) yield exportBatch(part, split, cache.dim, normalization);
  }
}

/**
 * Exports one cached split: rows de-duplicated (the newest record of each path), failures and removed images
 * excluded, features optionally normalised, with class names and provenance beside (or, for Arrow and Parquet,
 * inside) the output. Options not given take DEFAULT_EXPORT_OPTIONS; `out` is required.
 *
 * @example
 * ```ts
 * import { exportSplit } from 'featcache';
 * const r = await exportSplit({ cache: './features', split: 'val', format: 'parquet', out: 'val.parquet', normalize: 'l2' });
 * console.log(`${r.rows} rows × ${r.dim} → ${r.files.join(', ')}`);
 * ```
 */
export async function exportSplit(given: Partial<ExportOptions>): Promise<ExportResult> {
  const asked: ExportOptions = withDefaults(DEFAULT_EXPORT_OPTIONS, given);
  validate(asked);
  const started = performance.now();
  const cache = await FeatureCache.open(asked.cache);
  // The split as the cache names it (`train` may be cached as `training`: util/split-names.ts).
  const options = { ...asked, split: await cache.resolveSplit(asked.split) };
  const latest = await cache.latest(options.split);
  const rows = FeatureCache.liveRows(latest);
  if (rows === 0) {
    const available = await cache.splits();
    throw invalidParameter(
      'split',
      `a split of ${options.cache} with rows (${available.length > 0 ? `available: ${available.join(', ')}` : 'the cache is empty'})`,
      options.split,
    );
  }
  const { normalization, fittedOn } = await exportNormalization(options, cache);
  const provenance = provenanceOf(options, cache, rows, normalization, fittedOn);
  const m = cache.manifest;
  const spec: WriterSpec = {
    count: rows,
    dim: cache.dim,
    classes: m.classes,
    metadata: {
      [METADATA_KEYS.classes]: JSON.stringify(m.classes),
      [METADATA_KEYS.provenance]: JSON.stringify(provenance),
    },
  };
  const sideFiles = sideFilesFor(options.format, m.classes, normalization, provenance);

  const directory = DIRECTORY_FORMATS.includes(options.format);
  if (!directory) await requireSideFilesOurs(options.out, Object.keys(sideFiles));
  const output: (OutputFile | OutputDir) & { kind?: string } = directory
    ? await prepareOutputDir(options.out, EXPORT_MARKER)
    : await openOutputFile(options.out);
  const batches = exportBatches(cache, options.split, latest, normalization);
  const files = await writeAndCommit(options, output, spec, batches, sideFiles);
  const bytes = await outputBytes(output);
  const seconds = (performance.now() - started) / 1000;
  return {
    split: options.split,
    format: options.format,
    rows,
    dim: cache.dim,
    files,
    bytes,
    seconds,
    rowsPerSecond: rows / seconds,
    mbPerSecond: bytes === null ? null : bytes / 1e6 / seconds,
    normalization: {
      kind: normalization.kind,
      statsFile: 'stats.json' in sideFiles ? statsFileOf(options.out, directory, files) : null,
      fittedOn,
    },
  };
}

/** Bytes written: the directory's files, the file's size, or null for a stream. */
async function outputBytes(output: (OutputFile | OutputDir) & { kind?: string }): Promise<number | null> {
  if ('file' in output) return directorySize(output.dir);
  return output.kind === 'file' ? (await fs.stat(output.resolved)).size : null;
}

/** Where stats.json went: inside a directory output, beside a file output, nowhere for a stream. */
function statsFileOf(out: string, directory: boolean, files: string[]): string | null {
  if (directory) return path.join(out, 'stats.json');
  return files.length > 1 ? `${out}.stats.json` : null;
}

/** The normalisation the export applies: none/l2, standard from a stats file, or standard fitted on `fitSplit`. */
async function exportNormalization(
  options: ExportOptions,
  cache: FeatureCache,
): Promise<{ normalization: Normalization; fittedOn: string | null }> {
  const normalization: Normalization =
    options.normalize !== 'standard'
      ? { kind: options.normalize }
      : options.stats
        ? await loadStats(options.stats, cache.dim)
        : await fitStatistics(cache, options.fitSplit);
  const fittedOn = normalization.kind === 'standard' && !options.stats ? options.fitSplit : null;
  return { normalization, fittedOn };
}

/**
 * Writes the rows and side files into `output` and commits it; on any failure the output is aborted (nothing of this
 * run stays, a stream excepted) and the error names --out. Returns the files written, the main one first.
 */
async function writeAndCommit(
  options: ExportOptions,
  output: (OutputFile | OutputDir) & { kind?: string },
  spec: WriterSpec,
  batches: ReturnType<typeof exportBatches>,
  sideFiles: Record<string, string>,
): Promise<string[]> {
  try {
    await writeExport(options.format, output, spec, batches);
    const side = await writeSideFiles(output, options, sideFiles);
    await output.commit();
    return [options.out, ...side];
  } catch (error) {
    await output.abort().catch(() => {});
    if (error instanceof FeatcacheError) throw error;
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw new FeatcacheError(
      `${optionName('out')} ${options.out}: cannot write (${code}); ${output.kind === 'stream' ? 'what was written through is incomplete' : 'nothing was written'}`,
      ExitCode.failed,
    );
  }
}

/** What the export was made from and how: model identity, preprocessing, normalisation, versions. */
function provenanceOf(
  options: ExportOptions,
  cache: FeatureCache,
  rows: number,
  normalization: Normalization,
  fittedOn: string | null,
): Record<string, unknown> {
  const m = cache.manifest;
  return {
    cache: path.resolve(options.cache),
    split: options.split,
    format: options.format,
    rows,
    dim: cache.dim,
    normalization: normalization.kind,
    statsFittedOn: fittedOn,
    statsFile: options.stats,
    unlabelledLabel: SELF_DESCRIBING.includes(options.format) ? null : UNLABELLED,
    modelFile: m.modelFile,
    modelSha256: m.modelSha256,
    tappedTensor: m.tappedTensor,
    preset: m.preset,
    exif: m.exif,
    icc: m.icc,
    precision: m.precision ?? 'fp32',
    extractedWith: m.versions,
    exportedWith: toolVersions(),
    exportedAt: new Date().toISOString(),
  };
}

/** classes.txt, provenance.json (formats without metadata of their own) and, for `standard`, stats.json. */
function sideFilesFor(
  format: Format,
  classes: string[],
  normalization: Normalization,
  provenance: Record<string, unknown>,
): Record<string, string> {
  const described = SELF_DESCRIBING.includes(format);
  const files: Record<string, string> = {
    ...(described ? {} : { 'classes.txt': classes.map((c) => `${c}\n`).join('') }),
    ...(normalization.kind === 'standard' ? { 'stats.json': JSON.stringify({ ...normalization, ...WRITTEN_BY }) } : {}),
  };
  if (described) return files;
  // The provenance lists the other side files' sha256: what proves, on a later export, that they are featcache's.
  const sideFiles = Object.fromEntries(
    Object.entries(files).map(([name, content]) => [name, sha256Bytes(Buffer.from(content))]),
  );
  return { ...files, 'provenance.json': `${JSON.stringify({ ...provenance, ...WRITTEN_BY, sideFiles }, null, 2)}\n` };
}

/** The mark featcache's JSON side files carry, so a later export may replace them. */
const WRITTEN_BY = Object.freeze({ writtenBy: 'featcache' });

function parsedJson(content: Buffer): Record<string, unknown> | null {
  try {
    const value = JSON.parse(content.toString('utf8')) as unknown;
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/**
 * Side files beside a file output are replaced only when featcache can prove it wrote them: JSON ones carry its
 * mark; classes.txt must match the sha256 its featcache provenance.json recorded. Checked before anything is written.
 */
async function requireSideFilesOurs(out: string, names: string[]): Promise<void> {
  const provenance = parsedJson(await fs.readFile(`${out}.provenance.json`).catch(() => Buffer.alloc(0)));
  const recorded = (provenance?.writtenBy === WRITTEN_BY.writtenBy ? provenance.sideFiles : null) as Record<
    string,
    string
  > | null;
  for (const name of names) {
    await requireOursOrAbsent(`${out}.${name}`, 'out', (content) =>
      name.endsWith('.json')
        ? parsedJson(content)?.writtenBy === WRITTEN_BY.writtenBy
        : recorded?.[name] === sha256Bytes(content),
    );
  }
}

/** Side files go inside a directory output, beside a file output, and nowhere for a stream (with a note). */
async function writeSideFiles(
  output: OutputFile | OutputDir,
  options: ExportOptions,
  sideFiles: Record<string, string>,
): Promise<string[]> {
  if ('file' in output) {
    for (const [name, content] of Object.entries(sideFiles)) await fs.writeFile(output.file(name), content);
    return [];
  }
  if (output.kind === 'stream') {
    if (Object.keys(sideFiles).length > 0)
      options.log(
        `export: ${options.out} is written through (a device, FIFO or stdout): ${Object.keys(sideFiles).join(', ')} not saved`,
      );
    return [];
  }
  // Beside a file they are written (atomically) before it appears, so a visible export always has them.
  const written: string[] = [];
  for (const [name, content] of Object.entries(sideFiles)) {
    await writeOutputFile(`${options.out}.${name}`, content);
    written.push(`${options.out}.${name}`);
  }
  return written;
}

async function directorySize(dir: string): Promise<number> {
  let total = 0;
  for (const name of await fs.readdir(dir)) total += (await fs.stat(path.join(dir, name))).size;
  return total;
}
