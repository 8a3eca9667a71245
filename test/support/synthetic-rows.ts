/** Feature caches written part by part (no backbone), for tests of what reads them: the neighbour engine. */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Split } from '../../src/head/model.js';
import { type CacheManifest, ensureManifest } from '../../src/store/manifest.js';
import { writePart } from '../../src/store/part.js';
import { seededRandom } from '../../src/util/random.js';

export const syntheticManifest = (dim: number, over: Partial<CacheManifest> = {}): CacheManifest => ({
  format: 1,
  modelFile: 'm.onnx',
  modelSha256: 'a'.repeat(64),
  tappedTensor: 'pool',
  tap: {},
  preset: { name: 'torchvision' },
  exif: 'apply',
  icc: 'convert',
  dim,
  classes: ['a', 'b'],
  createdAt: 'now',
  versions: {},
  ...over,
});

export async function syntheticCache(dir: string, dim: number): Promise<CacheManifest> {
  return ensureManifest(dir, syntheticManifest(dim));
}

/** Writes one part; `provenance` defaults to the manifest's identity, as extract writes it. */
export async function writeSyntheticPart(
  cache: string,
  split: string,
  name: string,
  paths: string[],
  features: Float32Array,
  options: { removed?: string[]; provenance?: object; dim: number },
): Promise<void> {
  await fs.mkdir(path.join(cache, split), { recursive: true });
  await writePart(path.join(cache, split, name), {
    meta: {
      split,
      shard: '0of1',
      runId: name,
      dim: options.dim,
      removed: options.removed ?? [],
      failures: [],
      provenance: (options.provenance ?? syntheticManifest(options.dim)) as Record<string, unknown>,
    },
    rows: paths.map((p, i) => ({ path: p, label: i % 2, labelName: ['a', 'b'][i % 2]!, size: 1, mtimeMs: 1 })),
    features,
  });
}

/** Rows drawn around `clusters` random centres (unit-scale noise `spread`): the shape of real embeddings. */
export function clusteredRows(count: number, dim: number, clusters: number, seed: number, spread = 0.35): Float32Array {
  const random = seededRandom(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const centres = Float32Array.from({ length: clusters * dim }, gauss);
  const out = new Float32Array(count * dim);
  for (let i = 0; i < count; i++) {
    const c = Math.floor(random() * clusters);
    for (let d = 0; d < dim; d++) out[i * dim + d] = centres[c * dim + d]! + spread * gauss();
  }
  return out;
}

/**
 * A labelled split for the head's tests: `classes` uniform centres in [-1, 1]^dim, rows assigned round-robin, each
 * value its centre's plus uniform noise of `noise`, plus `offset` (a positive offset keeps rows off the origin).
 */
export function labelledClusters(
  count: number,
  dim: number,
  classes: number,
  noise: number,
  seed: number,
  offset = 0,
): Split {
  const random = seededRandom(seed);
  const centres = Float32Array.from({ length: classes * dim }, () => random() * 2 - 1);
  const labels = Int32Array.from({ length: count }, (_, i) => i % classes);
  const features = Float32Array.from(
    { length: count * dim },
    (_, i) => offset + centres[labels[Math.floor(i / dim)]! * dim + (i % dim)]! + (random() * 2 - 1) * noise,
  );
  return { features, labels, count };
}
