/**
 * What opening a backbone derives from the model file, kept in featcache's cache folder (util/cache-dir.ts) so that
 * a session starts in a fraction of the first one's time:
 * - the model's sha256, per (path, size, mtime, ctime, inode): hashing 100 MB is ~0.3 s on every start otherwise;
 * - the tapped graph, per (model sha256, tap, fp16, featcache version): protobuf decode, surgery and encode, ~0.7 s;
 * - onnxruntime's optimised graph (optimizedModelFilePath), per (graph, onnxruntime version, CPU): creating a session
 *   from it with optimisation off takes ~0.45 s instead of ~1.7 s on the ResNet50 fixture.
 * Each entry is a file plus a JSON record written after it (temporary + rename), naming what it was derived from; a
 * record that does not match the source, the versions, the CPU, or the file's own size and mtime is rebuilt, never
 * trusted. A cache folder that cannot be written only costs speed: the derived model is built in memory as before.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { sha256Bytes, sha256File, temporarySibling, writeBytesAtomic } from '../util/fsx.js';
import { featcacheCacheDir } from '../util/cache-dir.js';
import { featcacheVersion, toolVersions } from '../version.js';
import type { InputLayout } from './session.js';
import type { TapPoint } from './tap.js';

export { featcacheCacheDir };

/** onnxruntime's CPU optimisations (NCHWc blocking, kernel choice) depend on the instruction set: key them by CPU. */
export function cpuFingerprint(): string {
  return `${process.arch} ${os.cpus()[0]?.model ?? 'unknown'}`;
}

export function onnxruntimeVersion(): string {
  return toolVersions().onnxruntime ?? 'unknown';
}

interface FileStamp {
  size: number;
  mtimeMs: number;
}

async function stampOf(file: string): Promise<FileStamp | null> {
  const st = await fs.stat(file).catch(() => null);
  return st ? { size: st.size, mtimeMs: st.mtimeMs } : null;
}

const sameStamp = (a: FileStamp | null | undefined, b: FileStamp | null) =>
  !!a && !!b && a.size === b.size && a.mtimeMs === b.mtimeMs;

async function readJson<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as T;
  } catch {
    return null;
  }
}

/** Writes a cache file; a cache that cannot be written (read-only home, full disk) is not an error, only slower. */
async function tryWrite(file: string, data: string | Uint8Array): Promise<boolean> {
  try {
    await fs.mkdir(path.dirname(file), { recursive: true });
    await writeBytesAtomic(file, data);
    return true;
  } catch {
    return false;
  }
}

/** The folder of everything derived from one model, by its sha256. */
export function modelDir(cacheDir: string, sha256: string): string {
  return path.join(cacheDir, 'models', sha256);
}

interface HashRecord {
  path: string;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  sha256: string;
}

/** A model file's sha256, read from the cache while the file's path, size, mtime, ctime and inode are unchanged. */
export async function modelSha256(file: string, cacheDir: string): Promise<{ sha256: string; reused: boolean }> {
  const real = await fs.realpath(file);
  const st = await fs.stat(real);
  const record = path.join(cacheDir, 'hashes', `${sha256Bytes(Buffer.from(real)).slice(0, 32)}.json`);
  const saved = await readJson<HashRecord>(record);
  const matches =
    saved?.path === real &&
    saved.size === st.size &&
    saved.mtimeMs === st.mtimeMs &&
    saved.ctimeMs === st.ctimeMs &&
    saved.ino === st.ino &&
    /^[0-9a-f]{64}$/.test(saved.sha256);
  if (matches) return { sha256: saved.sha256, reused: true };
  const sha256 = await sha256File(real);
  const fresh: HashRecord = {
    path: real,
    size: st.size,
    mtimeMs: st.mtimeMs,
    ctimeMs: st.ctimeMs,
    ino: st.ino,
    sha256,
  };
  await tryWrite(record, `${JSON.stringify(fresh)}\n`);
  return { sha256, reused: false };
}

export interface TappedRecord {
  kind: 'tapped';
  source: { file: string; sha256: string };
  request: { tap: string; fp16: boolean };
  tap: TapPoint;
  input: InputLayout;
  /** Feature width, once a session has reported it (saves the probe run). */
  dim: number | null;
  stamp: FileStamp;
  createdAt: string;
  versions: Record<string, string>;
}

export interface TappedModel {
  /** The tapped graph on disk, or null when the cache could not be written (then `bytes` holds it). */
  file: string | null;
  bytes: Uint8Array | null;
  record: TappedRecord;
  reused: boolean;
  /** Remembers the feature width in the record, so the next start skips the probe run. */
  rememberDim(dim: number): Promise<void>;
}

/**
 * The tapped graph for (model, tap, fp16). `build` runs only on a miss; the surgery belongs to this featcache
 * version, so another version rebuilds it.
 */
export async function tappedModel(
  source: { file: string; sha256: string },
  request: { tap: string; fp16: boolean },
  cacheDir: string,
  build: () => Promise<{ bytes: Uint8Array; tap: TapPoint; input: InputLayout }>,
): Promise<TappedModel> {
  const key = sha256Bytes(Buffer.from(JSON.stringify(request))).slice(0, 16);
  const file = path.join(modelDir(cacheDir, source.sha256), `tapped-${key}.onnx`);
  const recordFile = `${file}.json`;
  const saved = await readJson<TappedRecord>(recordFile);
  const rememberDim = async (record: TappedRecord, dim: number) => {
    if (record.dim !== dim) await tryWrite(recordFile, `${JSON.stringify({ ...record, dim }, null, 2)}\n`);
  };
  if (
    saved?.kind === 'tapped' &&
    saved.source.sha256 === source.sha256 &&
    saved.request.tap === request.tap &&
    saved.request.fp16 === request.fp16 &&
    saved.versions.featcache === featcacheVersion &&
    sameStamp(saved.stamp, await stampOf(file))
  )
    return { file, bytes: null, record: saved, reused: true, rememberDim: (dim) => rememberDim(saved, dim) };
  const built = await build();
  const written = await tryWrite(file, built.bytes);
  const record: TappedRecord = {
    kind: 'tapped',
    source: { file: path.resolve(source.file), sha256: source.sha256 },
    request,
    tap: built.tap,
    input: built.input,
    dim: null,
    stamp: (await stampOf(file)) ?? { size: 0, mtimeMs: 0 },
    createdAt: new Date().toISOString(),
    versions: toolVersions(),
  };
  const recorded = written && (await tryWrite(recordFile, `${JSON.stringify(record, null, 2)}\n`));
  return {
    file: recorded ? file : null,
    bytes: built.bytes,
    record,
    reused: false,
    rememberDim: (dim) => (recorded ? rememberDim(record, dim) : Promise.resolve()),
  };
}

export interface OptimisedRecord {
  kind: 'optimised';
  /** What was optimised: the sha256 of the source model plus the variant (tapped-…, int8-…). */
  source: { sha256: string; variant: string };
  onnxruntime: string;
  cpu: string;
  stamp: FileStamp;
  createdAt: string;
  versions: Record<string, string>;
}

/**
 * onnxruntime's optimised graph of a variant, for the CPU provider. `load`: a valid one is on disk (create the
 * session from it with optimisation off). `save`: none is; have onnxruntime write it to `file` while it optimises,
 * then `commit()` it.
 */
export type OptimisedPlan =
  | { mode: 'none' }
  | { mode: 'load'; file: string }
  | { mode: 'save'; file: string; commit: () => Promise<boolean>; discard: () => Promise<void> };

export async function optimisedModel(
  source: { sha256: string; variant: string },
  cacheDir: string,
): Promise<OptimisedPlan> {
  const file = path.join(modelDir(cacheDir, source.sha256), `${source.variant}.ort-cpu.onnx`);
  const recordFile = `${file}.json`;
  const saved = await readJson<OptimisedRecord>(recordFile);
  if (
    saved?.kind === 'optimised' &&
    saved.source.sha256 === source.sha256 &&
    saved.source.variant === source.variant &&
    saved.onnxruntime === onnxruntimeVersion() &&
    saved.cpu === cpuFingerprint() &&
    saved.versions.featcache === featcacheVersion &&
    sameStamp(saved.stamp, await stampOf(file))
  )
    return { mode: 'load', file };
  if (!(await prepareCacheDir(path.dirname(file)))) return { mode: 'none' };
  const tmp = temporarySibling(file);
  return {
    mode: 'save',
    file: tmp,
    async commit() {
      try {
        await fs.rename(tmp, file);
      } catch {
        await fs.rm(tmp, { force: true });
        return false;
      }
      const record: OptimisedRecord = {
        kind: 'optimised',
        source,
        onnxruntime: onnxruntimeVersion(),
        cpu: cpuFingerprint(),
        stamp: (await stampOf(file)) ?? { size: 0, mtimeMs: 0 },
        createdAt: new Date().toISOString(),
        versions: toolVersions(),
      };
      return tryWrite(recordFile, `${JSON.stringify(record, null, 2)}\n`);
    },
    discard: () => fs.rm(tmp, { force: true }),
  };
}

/** Whether `dir` can hold the cache (created if need be); onnxruntime cannot be asked to save into a missing folder. */
export async function prepareCacheDir(dir: string): Promise<boolean> {
  try {
    await fs.mkdir(dir, { recursive: true });
    await fs.access(dir, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** A JSON result derived from a model and this onnxruntime on this CPU (e.g. int8 fusion), computed once. */
export async function cachedForRuntime<T>(file: string, compute: () => Promise<T>): Promise<T> {
  const saved = await readJson<{ onnxruntime: string; cpu: string; value: T }>(file);
  if (saved && saved.onnxruntime === onnxruntimeVersion() && saved.cpu === cpuFingerprint()) return saved.value;
  const value = await compute();
  await tryWrite(file, `${JSON.stringify({ onnxruntime: onnxruntimeVersion(), cpu: cpuFingerprint(), value })}\n`);
  return value;
}
