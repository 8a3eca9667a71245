/**
 * The cache manifest (`<cache>/cache.json`) pins what every row in the cache was computed with. A run whose model,
 * tap or preprocessing differs is refused, so rows from different backbones never mix.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Int8Provenance } from '../backbone/int8.js';
import { FeatcacheError, damagedFile, optionName } from '../errors.js';
import { writeBytesAtomic } from '../util/fsx.js';

/** Where a feature cache lives unless `--cache` says otherwise. */
export const DEFAULT_CACHE_DIR = './features';

export const CACHE_FORMAT = 1;
export const MANIFEST_FILE = 'cache.json';

/** What makes two feature vectors comparable; the fields that must match for rows to share a cache. */
export interface FeatureIdentity {
  modelSha256: string;
  tappedTensor: string;
  preset: Record<string, unknown>;
  exif: string;
  icc: string;
  /** Precision the backbone ran in; absent means fp32. */
  precision?: 'fp32' | 'fp16' | 'int8';
  /** For int8: which calibrated quantisation computed the features (two calibrations give different features). */
  calibrationHash?: string | undefined;
}

export interface CacheManifest extends FeatureIdentity {
  format: number;
  modelFile: string;
  /** For int8: the saved quantised model (its provenance file sits beside it). */
  int8Model?: string | undefined;
  /**
   * For int8: the calibration this cache keeps — the images and their sha256, the recorded ranges and the sha256 of
   * the quantised model. Every later extract into the cache uses it, however the data grows.
   */
  int8Calibration?: Int8Provenance | undefined;
  tap: Record<string, unknown>;
  dim: number;
  classes: string[];
  createdAt: string;
  versions: Record<string, string>;
}

export async function readManifest(cacheDir: string): Promise<CacheManifest | null> {
  const file = path.join(cacheDir, MANIFEST_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return null;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw damagedFile(file, 'not valid JSON', MANIFEST_REMEDY);
  }
  const problems = manifestProblems(parsed);
  if (problems.length > 0)
    throw damagedFile(file, `not a featcache cache manifest (${problems.join('; ')})`, MANIFEST_REMEDY);
  return parsed as CacheManifest;
}

const MANIFEST_REMEDY =
  'featcache writes it on the first extract into a cache: restore it from a backup, or extract into a new cache directory';

const isString = (v: unknown) => typeof v === 'string' && v.length > 0;
const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Each field a reader relies on, with what it must be: the schema of cache.json. */
const MANIFEST_SCHEMA: Readonly<Record<string, [string, (v: unknown) => boolean]>> = Object.freeze({
  format: ['an integer', Number.isInteger],
  modelSha256: ["the model file's sha256", isString],
  modelFile: ['a path', isString],
  tappedTensor: ['a tensor name', isString],
  preset: ['a preset object', isObject],
  exif: ['a policy name', isString],
  icc: ['a policy name', isString],
  dim: ['a positive integer', (v) => Number.isInteger(v) && (v as number) > 0],
  classes: ['a list of class names', (v) => Array.isArray(v) && v.every((c) => typeof c === 'string')],
});

export function manifestProblems(value: unknown): string[] {
  if (!isObject(value)) return ['expected a JSON object'];
  const record = value as Record<string, unknown>;
  return Object.entries(MANIFEST_SCHEMA)
    .filter(([key, [, valid]]) => !valid(record[key]))
    .map(
      ([key, [expected]]) =>
        `${key}: expected ${expected}, got ${record[key] === undefined ? 'nothing' : JSON.stringify(record[key]).slice(0, 40)}`,
    );
}

export function identityDifferences(a: FeatureIdentity, b: FeatureIdentity): string[] {
  const diffs: string[] = [];
  if (a.modelSha256 !== b.modelSha256)
    diffs.push(`model sha256 ${a.modelSha256.slice(0, 12)}… vs ${b.modelSha256.slice(0, 12)}…`);
  if (a.tappedTensor !== b.tappedTensor) diffs.push(`tapped tensor ${a.tappedTensor} vs ${b.tappedTensor}`);
  if (JSON.stringify(a.preset) !== JSON.stringify(b.preset)) {
    // Same name, other resize kernel: a cache made before the torchvision presets resized exactly as Pillow does.
    const kernelOnly = a.preset.name === b.preset.name && a.preset.kernel !== b.preset.kernel;
    diffs.push(
      kernelOnly
        ? `preset ${String(a.preset.name)} with resize kernel ${String(a.preset.kernel)} vs ${String(b.preset.kernel)}`
        : `preset ${String(a.preset.name)} vs ${String(b.preset.name)}`,
    );
  }
  if (a.exif !== b.exif) diffs.push(`--exif ${a.exif} vs ${b.exif}`);
  if (a.icc !== b.icc) diffs.push(`--icc ${a.icc} vs ${b.icc}`);
  if ((a.precision ?? 'fp32') !== (b.precision ?? 'fp32')) {
    const int8 = a.precision === 'int8' || b.precision === 'int8';
    diffs.push(
      `precision ${a.precision ?? 'fp32'} vs ${b.precision ?? 'fp32'}${int8 ? ' (int8 features are not interchangeable with float ones)' : ''}`,
    );
  } else if ((a.calibrationHash ?? null) !== (b.calibrationHash ?? null)) {
    diffs.push(
      `int8 calibration ${a.calibrationHash?.slice(0, 12) ?? 'none'}… vs ${b.calibrationHash?.slice(0, 12) ?? 'none'}… (a different calibration quantises differently)`,
    );
  }
  return diffs;
}

/** Creates the manifest, or checks that an existing one describes the same features and classes. */
export async function ensureManifest(cacheDir: string, wanted: CacheManifest): Promise<CacheManifest> {
  const existing = await readManifest(cacheDir);
  if (!existing) {
    await fs.mkdir(cacheDir, { recursive: true });
    await writeBytesAtomic(path.join(cacheDir, MANIFEST_FILE), `${JSON.stringify(wanted, null, 2)}\n`);
    return wanted;
  }
  const diffs = identityDifferences(existing, wanted);
  if (diffs.length > 0) {
    throw new FeatcacheError(
      `${optionName('cache')} ${cacheDir}: holds features of a different backbone or preprocessing (${diffs.join('; ')}); use another cache directory for this model`,
    );
  }
  if (
    wanted.classes.length > 0 &&
    existing.classes.length > 0 &&
    JSON.stringify(existing.classes) !== JSON.stringify(wanted.classes)
  ) {
    throw new FeatcacheError(
      `${optionName('cache')} ${cacheDir}: the dataset's classes changed (cache: ${existing.classes.length} classes, data: ${wanted.classes.length}); label indices would no longer agree — use a new cache directory`,
    );
  }
  const updated = { ...existing };
  if (existing.classes.length === 0 && wanted.classes.length > 0) updated.classes = wanted.classes;
  // An int8 cache made before featcache kept its calibration learns it from the first run that used the same one.
  if (
    !existing.int8Calibration &&
    wanted.int8Calibration &&
    wanted.int8Calibration.calibrationHash === existing.calibrationHash
  )
    updated.int8Calibration = wanted.int8Calibration;
  if (updated.classes === existing.classes && updated.int8Calibration === existing.int8Calibration) return existing;
  await writeBytesAtomic(path.join(cacheDir, MANIFEST_FILE), `${JSON.stringify(updated, null, 2)}\n`);
  return updated;
}
