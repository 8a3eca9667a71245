/**
 * A many-small-classes feature cache (no backbone): 120 classes in 12 groups of 10 nearby centres, 256 post-ReLU
 * dimensions, 2–17 train rows per class and a third as many val rows (a random 75/25 split of 3–22 images per class).
 * Stands in for a real 120-class few-shot set, which /work/shared does not have, in the probe's calibration check.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { ensureManifest } from '../../src/store/manifest.js';
import { writePart } from '../../src/store/part.js';
import { seededRandom } from '../../src/util/random.js';
import { syntheticManifest } from './synthetic-rows.js';

export const FEWSHOT_CLASSES = 120;
export const FEWSHOT_DIM = 256;

/**
 * Writes train and val; `spread` is the per-dimension noise (3: about 0.6–0.7 val top-1 for the probe). Val has `valShare`
 * times each class's train rows (default a third, at least one): the same class balance as train. A larger share
 * (train is unchanged: it is drawn first) measures calibration on more rows than a few-shot val split has.
 */
export async function writeFewShotCache(
  cache: string,
  seed: number,
  { spread = 3, valShare = 1 / 3 }: { spread?: number; valShare?: number } = {},
): Promise<void> {
  const random = seededRandom(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const dim = FEWSHOT_DIM;
  const parents = Array.from({ length: FEWSHOT_CLASSES / 10 }, () => Float32Array.from({ length: dim }, gauss));
  const centres = Array.from({ length: FEWSHOT_CLASSES }, (_, c) =>
    parents[Math.floor(c / 10)]!.map((v) => v + 0.8 * gauss()),
  );
  const classes = Array.from({ length: FEWSHOT_CLASSES }, (_, c) => `c${String(c).padStart(3, '0')}`);
  const perClass = Array.from({ length: FEWSHOT_CLASSES }, () => 2 + Math.floor(random() * 16));
  const manifest = syntheticManifest(dim, { classes });
  await ensureManifest(cache, manifest);
  for (const split of ['train', 'val']) {
    const rows: { path: string; label: number; labelName: string; size: number; mtimeMs: number }[] = [];
    const features: number[] = [];
    classes.forEach((name, c) => {
      const n = split === 'train' ? perClass[c]! : Math.max(1, Math.round(perClass[c]! * valShare));
      for (let i = 0; i < n; i++) {
        rows.push({ path: `${split}/${name}/${i}.jpg`, label: c, labelName: name, size: 1, mtimeMs: 1 });
        for (const v of centres[c]!) features.push(Math.max(0, v + spread * gauss()));
      }
    });
    await fs.mkdir(path.join(cache, split), { recursive: true });
    await writePart(path.join(cache, split, 'part-001.arrow'), {
      meta: {
        split,
        shard: '0of1',
        runId: 'fewshot',
        dim,
        removed: [],
        failures: [],
        provenance: manifest as unknown as Record<string, unknown>,
      },
      rows,
      features: Float32Array.from(features),
    });
  }
}
