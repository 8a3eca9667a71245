/**
 * Synthetic feature caches of clustered, post-ReLU-like features (what a CNN's pooled features look like: non-negative,
 * sparse, one cluster per class), for the head-scale benchmark and the streaming tests. Rows are written in class
 * order, part by part, as an ImageFolder extraction writes them: the worst case for a part-level shuffle.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { type CacheManifest, ensureManifest } from '../src/store/manifest.js';
import { writePart } from '../src/store/part.js';
import { seededRandom } from '../src/util/random.js';

export interface SyntheticSpec {
  rows: number;
  valRows: number;
  dim: number;
  classes: number;
  partRows: number;
  seed: number;
  /** Noise around each class centre, relative to the centres' spread (larger: harder). */
  noise: number;
}

/** A standard normal sampler (Box–Muller) over a seeded uniform source. */
function gaussian(random: () => number): () => number {
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u = Math.max(random(), 1e-12);
    const v = random();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

export function syntheticManifest(dim: number, classes: number): CacheManifest {
  return {
    format: 1,
    modelFile: 'synthetic.onnx',
    modelSha256: 'synthetic',
    tappedTensor: 'pool',
    tap: {},
    preset: { name: 'synthetic' },
    exif: 'ignore',
    icc: 'ignore',
    dim,
    classes: Array.from({ length: classes }, (_, c) => `class${String(c).padStart(4, '0')}`),
    createdAt: 'synthetic',
    versions: {},
  };
}

/** Writes train and val splits of `spec` into `dir` (a new cache). Returns the manifest. */
export async function writeSyntheticCache(dir: string, spec: SyntheticSpec): Promise<CacheManifest> {
  const manifest = syntheticManifest(spec.dim, spec.classes);
  await ensureManifest(dir, manifest);
  const { dim, classes } = spec;
  const normal = gaussian(seededRandom(spec.seed));
  // Class centres: a shared positive offset (ReLU features are mostly positive) plus a class-specific direction.
  const centres = Float32Array.from({ length: classes * dim }, () => normal());
  for (const [split, count, salt] of [
    ['train', spec.rows, 1],
    ['val', spec.valRows, 2],
  ] as const) {
    if (count === 0) continue;
    await fs.mkdir(path.join(dir, split), { recursive: true });
    const noise = gaussian(seededRandom(spec.seed * 1000 + salt));
    for (let start = 0, p = 0; start < count; start += spec.partRows, p++) {
      const n = Math.min(spec.partRows, count - start);
      const features = new Float32Array(n * dim);
      const rows = [];
      for (let i = 0; i < n; i++) {
        const index = start + i;
        // Class-ordered: rows [k·count/classes, (k+1)·count/classes) are class k.
        const label = Math.min(classes - 1, Math.floor((index * classes) / count));
        for (let d = 0; d < dim; d++) {
          const v = centres[label * dim + d]! + spec.noise * noise() - 0.5;
          features[i * dim + d] = v > 0 ? v : 0;
        }
        rows.push({
          path: `${split}/${manifest.classes[label]!}/img${String(index).padStart(8, '0')}.jpg`,
          label,
          labelName: manifest.classes[label]!,
          size: 1,
          mtimeMs: 1,
        });
      }
      await writePart(path.join(dir, split, `part-synthetic-${String(p).padStart(6, '0')}.arrow`), {
        meta: { split, shard: '0of1', runId: 'synthetic', dim, failures: [], removed: [], provenance: {} },
        rows,
        features,
      });
    }
  }
  return manifest;
}
