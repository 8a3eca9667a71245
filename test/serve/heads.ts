/** Test support: heads written with saveHead from seeded random weights, with the provenance of a real backbone file. */
import * as fs from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { loadTf } from '../../src/head/runtime.js';
import { type HeadInfo, saveHead } from '../../src/head/saved.js';
import type { DenseWeights } from '../../src/head/model.js';
import { PRESETS } from '../../src/image/presets.js';
import type { Normalization } from '../../src/head/normalize.js';
import { toolVersions } from '../../src/version.js';

export interface TestHeadOptions {
  model: string;
  tappedTensor: string;
  dim: number;
  classes: string[];
  normalization: Normalization['kind'];
  hidden?: number;
  temperature?: number;
  seed?: number;
  /** Scale of the random weights: large enough that probabilities are far from uniform. */
  scale?: number;
  /** The preset recorded as the head's (default torchvision's): a cache's own, to serve /similar over it. */
  preset?: Record<string, unknown>;
}

function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
}

export async function writeTestHead(dir: string, o: TestHeadOptions): Promise<HeadInfo> {
  const random = seeded(o.seed ?? 7);
  const scale = o.scale ?? 1;
  const sizes = [o.dim, ...(o.hidden ? [o.hidden] : []), o.classes.length];
  const layers: DenseWeights[] = sizes.slice(1).map((units, i) => ({
    kernel: Float32Array.from({ length: sizes[i]! * units }, () => random() * scale),
    shape: [sizes[i]!, units],
    bias: Float32Array.from({ length: units }, () => random() * 0.1),
    activation: i + 2 === sizes.length ? 'softmax' : 'relu',
  }));
  const normalization: Normalization =
    o.normalization === 'standard'
      ? {
          kind: 'standard',
          mean: Array.from({ length: o.dim }, () => random() * 0.2),
          std: Array.from({ length: o.dim }, () => 0.5 + Math.abs(random())),
        }
      : { kind: o.normalization };
  const sha = createHash('sha256')
    .update(await fs.readFile(o.model))
    .digest('hex');
  const info = {
    format: 1,
    classes: o.classes,
    normalization,
    provenance: {
      modelSha256: sha,
      modelFile: o.model,
      tappedTensor: o.tappedTensor,
      preset: o.preset ?? { ...PRESETS.torchvision! },
      exif: 'ignore',
      icc: 'ignore',
      dim: o.dim,
      cache: 'test',
      trainedAt: new Date(0).toISOString(),
      backend: 'cpu',
      backendSkipped: [],
      versions: toolVersions(),
    },
    options: {},
    bestEpoch: 1,
    summary: {},
    ...(o.temperature !== undefined ? { temperature: o.temperature } : {}),
  } as HeadInfo;
  const { tf } = await loadTf('cpu');
  await saveHead(tf, dir, { info, layers, extras: {} });
  return info;
}
