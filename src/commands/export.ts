/**
 * `featcache export`: store → export. Streams a split out of the cache part by part (memory does not grow with the
 * number of rows) into formats other learners read, and renames the result into place only when it is complete.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { FeatcacheError } from '../errors.js';
import { FORMATS, type Format, UNLABELLED, openWriter } from '../export/formats.js';
import { parseChoice } from '../errors.js';
import { NORMALIZATIONS, type Normalization, type NormalizationKind, StandardAccumulator, applyNormalization } from '../store/normalize.js';
import { FeatureCache } from '../store/reader.js';
import { writeBytesAtomic } from '../util/fsx.js';
import { toolVersions } from '../version.js';
import { type Args, cacheOption, emit, jsonOption } from '../cli/flags.js';

export interface ExportOptions {
  cache: string;
  split: string;
  format: Format;
  out: string;
  normalize: NormalizationKind;
  /** Reuse saved `standard` statistics instead of fitting them. */
  stats?: string | undefined;
  /** The split `standard` statistics are fitted on: always train, so val statistics never leak into train. */
  fitSplit: string;
}

export interface ExportResult {
  split: string;
  format: Format;
  rows: number;
  dim: number;
  files: string[];
  bytes: number;
  seconds: number;
  mbPerSecond: number;
  normalization: { kind: NormalizationKind; statsFile: string | null; fittedOn: string | null };
}

async function loadStats(file: string, dim: number): Promise<Normalization> {
  let stats: Normalization;
  try {
    stats = JSON.parse(await fs.readFile(file, 'utf8')) as Normalization;
  } catch (error) {
    throw new FeatcacheError(`--stats ${file}: cannot read normalisation statistics (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  if (stats.kind !== 'standard' || stats.mean?.length !== dim || stats.std?.length !== dim) {
    throw new FeatcacheError(`--stats ${file}: expected standard statistics with ${dim} means and stds (written by a previous export --normalize standard)`);
  }
  return stats;
}

async function fitStatistics(cache: FeatureCache, split: string): Promise<Normalization> {
  if (!(await cache.splits()).includes(split)) {
    throw new FeatcacheError(`--normalize standard: no "${split}" split in ${cache.dir} to fit statistics on; extract it, or pass --stats FILE`);
  }
  const accumulator = new StandardAccumulator(cache.dim);
  for await (const batch of cache.batches(split)) accumulator.add(batch.features, batch.count);
  return accumulator.result();
}

/** Where an export's side files go: inside an npy directory, beside any other output. */
function sideFile(options: ExportOptions, target: string, name: string): string {
  return options.format === 'npy' ? path.join(target, name) : `${target}.${name}`;
}

export async function runExport(options: ExportOptions): Promise<ExportResult> {
  const started = performance.now();
  const cache = await FeatureCache.open(options.cache);
  const latest = await cache.latest(options.split);
  const rows = FeatureCache.liveRows(latest);
  if (rows === 0) {
    const available = await cache.splits();
    throw new FeatcacheError(`--split ${options.split}: not in cache ${options.cache} or empty; ${available.length > 0 ? `available: ${available.join(', ')}` : 'the cache is empty'}`);
  }
  const normalization: Normalization = options.normalize !== 'standard'
    ? { kind: options.normalize }
    : options.stats ? await loadStats(options.stats, cache.dim) : await fitStatistics(cache, options.fitSplit);
  const out = path.resolve(options.out);
  const tmp = path.join(path.dirname(out), `.${path.basename(out)}.${process.pid}.tmp`);
  const files: string[] = [];
  try {
    await fs.rm(tmp, { recursive: true, force: true });
    const writer = await openWriter(options.format, tmp, rows, cache.dim, cache.manifest.classes);
    for await (const batch of cache.batches(options.split, latest)) {
      applyNormalization(normalization, batch.features, batch.count, cache.dim);
      await writer.write({ ...batch, labels: batch.labels.map((l) => (l < 0 ? UNLABELLED : l)) });
    }
    await writer.close();
    const m = cache.manifest;
    const provenance = {
      cache: path.resolve(options.cache), split: options.split, format: options.format, rows, dim: cache.dim, normalization: normalization.kind,
      statsFittedOn: normalization.kind === 'standard' && !options.stats ? options.fitSplit : null, statsFile: options.stats ?? null,
      unlabelledLabel: UNLABELLED, modelFile: m.modelFile, modelSha256: m.modelSha256, tappedTensor: m.tappedTensor, preset: m.preset,
      exif: m.exif, icc: m.icc, precision: m.precision ?? 'fp32', extractedWith: m.versions, exportedWith: toolVersions(), exportedAt: new Date().toISOString(),
    };
    const sideFiles: Record<string, string> = {
      'classes.txt': m.classes.map((c) => `${c}\n`).join(''),
      ...(normalization.kind === 'standard' ? { 'stats.json': JSON.stringify(normalization) } : {}),
      'provenance.json': `${JSON.stringify(provenance, null, 2)}\n`,
    };
    // Inside an npy directory they move with it; beside a file they are written atomically before it appears.
    for (const [name, content] of Object.entries(sideFiles)) {
      if (options.format === 'npy') await fs.writeFile(sideFile(options, tmp, name), content);
      else {
        await writeBytesAtomic(sideFile(options, out, name), content);
        files.push(sideFile(options, out, name));
      }
    }
    if (options.format === 'npy') await fs.rm(out, { recursive: true, force: true });
    await fs.rename(tmp, out);
    files.unshift(out);
  } catch (error) {
    await fs.rm(tmp, { recursive: true, force: true }).catch(() => {});
    if (error instanceof FeatcacheError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new FeatcacheError(`--out ${options.out}: cannot write (${code ?? (error as Error).message}); nothing was written`, 1);
  }
  const bytes = await sizeOf(out);
  const seconds = (performance.now() - started) / 1000;
  return {
    split: options.split, format: options.format, rows, dim: cache.dim, files, bytes, seconds, mbPerSecond: bytes / 1e6 / seconds,
    normalization: {
      kind: normalization.kind,
      statsFile: normalization.kind === 'standard' ? sideFile(options, out, 'stats.json') : null,
      fittedOn: normalization.kind === 'standard' && !options.stats ? options.fitSplit : null,
    },
  };
}

async function sizeOf(target: string): Promise<number> {
  const stat = await fs.stat(target);
  if (!stat.isDirectory()) return stat.size;
  let total = 0;
  for (const name of await fs.readdir(target)) total += (await fs.stat(path.join(target, name))).size;
  return total;
}

export const exportCommand: CommandModule = {
  command: 'export',
  describe: 'export a cached split for SVMs and other tools: libsvm/svmlight, npy, csv',
  builder: (y: Argv) =>
    y
      .option('cache', cacheOption)
      .option('split', { type: 'string', default: 'train', describe: 'cached split to export' })
      .option('format', { type: 'string', default: 'libsvm', choices: [...FORMATS], describe: 'libsvm/svmlight: "label i:v" (1-based, zeros omitted); npy: a directory of .npy files; csv: header + one row per image' })
      .option('out', { type: 'string', demandOption: true, describe: 'output file (npy: output directory)' })
      .option('normalize', { type: 'string', default: 'none', choices: [...NORMALIZATIONS], describe: 'none, l2 (per row), or standard (mean/std fitted on --fit-split)' })
      .option('stats', { type: 'string', describe: 'reuse standard statistics saved by an earlier export (…stats.json)' })
      .option('fit-split', { type: 'string', default: 'train', describe: 'split whose statistics standardise every export' })
      .option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as Args;
    const r = await runExport({
      cache: a.cache, split: a.split, format: parseChoice('--format', a.format, FORMATS), out: a.out,
      normalize: parseChoice('--normalize', a.normalize, NORMALIZATIONS), stats: a.stats, fitSplit: a['fit-split'],
    });
    emit(a.json, r, () => `export ${r.split}: ${r.rows} rows × ${r.dim} (${r.normalization.kind}) → ${r.files.join(', ')} (${(r.bytes / 1e6).toFixed(1)} MB, ${r.mbPerSecond.toFixed(1)} MB/s); unlabelled rows have label ${UNLABELLED}`);
  },
};
