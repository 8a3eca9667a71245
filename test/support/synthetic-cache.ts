/**
 * A small feature cache written directly through the store (no model, no images), so tests of what readers do with
 * damaged parts run in milliseconds. The train split has superseded rows, a removal and a failure, as a cache that
 * was extracted incrementally does; its features are deterministic and separable by class.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { ensureManifest } from '../../src/store/manifest.js';
import { type Row, writePart } from '../../src/store/part.js';

export const SYNTHETIC_CLASSES = ['ants', 'bees', 'wasps'];
export const SYNTHETIC_DIM = 4;

/** Deterministic features: class centre plus a small per-row wobble. */
function featureOf(label: number, k: number, version: number): number[] {
  return Array.from(
    { length: SYNTHETIC_DIM },
    (_, d) => (d === label ? 3 : 0) + Math.sin(k * 1.7 + d * 0.9 + version) * 0.5 + (d === 3 ? k * 0.01 : 0),
  );
}

async function writeSyntheticPart(
  cache: string,
  split: string,
  name: string,
  entries: { path: string; label: number; version?: number }[],
  extra: { removed?: string[]; failed?: string[] } = {},
): Promise<void> {
  const rows: Row[] = entries.map((e) => ({
    path: e.path,
    label: e.label,
    labelName: SYNTHETIC_CLASSES[e.label]!,
    size: 100 + e.path.length,
    mtimeMs: 1_700_000_000_000 + (e.version ?? 0),
  }));
  const features = Float32Array.from(
    entries.flatMap((e) => featureOf(e.label, Number(/\d+/.exec(e.path)?.[0] ?? 0), e.version ?? 0)),
  );
  await fs.mkdir(path.join(cache, split), { recursive: true });
  await writePart(path.join(cache, split, name), {
    meta: {
      split,
      shard: '0of1',
      runId: name,
      dim: SYNTHETIC_DIM,
      failures: (extra.failed ?? []).map((p) => ({
        path: p,
        stage: 'decode',
        message: 'bad',
        size: 1,
        mtimeMs: 1,
      })),
      removed: extra.removed ?? [],
      provenance: { synthetic: true },
    },
    rows,
    features,
  });
}

/**
 * Writes the cache: train in 3 parts (part 3 re-extracts two rows of part 1, removes one and records a failure),
 * val in one part. Returns the part files of train in commit order.
 */
export async function writeSyntheticCache(cache: string, perClass = 6): Promise<string[]> {
  await ensureManifest(cache, {
    format: 1,
    modelFile: 'synthetic.onnx',
    modelSha256: 'f'.repeat(64),
    tappedTensor: 'pooled',
    tap: {},
    preset: { name: 'torchvision' },
    exif: 'ignore',
    icc: 'ignore',
    dim: SYNTHETIC_DIM,
    classes: SYNTHETIC_CLASSES,
    createdAt: '2026-01-01T00:00:00.000Z',
    versions: {},
  });
  const train = SYNTHETIC_CLASSES.flatMap((_, label) =>
    Array.from({ length: perClass }, (_, k) => ({ path: `train/c${label}/img${label * 100 + k}.jpg`, label })),
  );
  const half = Math.ceil(train.length / 2);
  await writeSyntheticPart(cache, 'train', 'part-0001-0of1-000000.arrow', train.slice(0, half));
  await writeSyntheticPart(cache, 'train', 'part-0001-0of1-000001.arrow', train.slice(half));
  await writeSyntheticPart(
    cache,
    'train',
    'part-0002-0of1-000000.arrow',
    [
      { ...train[0]!, version: 1 },
      { ...train[1]!, version: 1 },
    ],
    { removed: [train[2]!.path], failed: [train[3]!.path] },
  );
  const val = SYNTHETIC_CLASSES.flatMap((_, label) =>
    Array.from({ length: 2 }, (_, k) => ({ path: `val/c${label}/img${label * 100 + k + 50}.jpg`, label })),
  );
  await writeSyntheticPart(cache, 'val', 'part-0001-0of1-000000.arrow', val);
  return ['part-0001-0of1-000000', 'part-0001-0of1-000001', 'part-0002-0of1-000000'].map((n) =>
    path.join(cache, 'train', `${n}.arrow`),
  );
}

/** Flips one byte (xor 0xff) at `offset` of `file`. */
export async function flipByte(file: string, offset: number): Promise<void> {
  const bytes = await fs.readFile(file);
  bytes[offset] = bytes[offset]! ^ 0xff;
  await fs.writeFile(file, bytes);
}
