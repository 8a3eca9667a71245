/**
 * Planted near-duplicates for the duplicates tests and bench: copies of validation images edited the ways real
 * copies differ (re-encoded, resized, centre-cropped, brightened or darkened), made with sharp, written into train.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';

export interface Planted {
  /** The validation image copied (relative to the data root, as the cache stores it). */
  source: string;
  /** The copy in training. */
  copy: string;
  edit: string;
}

/** The edit of copy i: cycles through the kinds, each over its range. */
export async function editedCopy(file: string, i: number): Promise<{ bytes: Buffer; edit: string }> {
  const image = sharp(file).rotate();
  const meta = await sharp(file).metadata();
  const [w, h] = [meta.width ?? 256, meta.height ?? 256];
  const kind = i % 4;
  const step = Math.floor(i / 4) % 5;
  if (kind === 0) {
    const quality = [50, 60, 70, 85, 95][step]!;
    return { bytes: await image.jpeg({ quality }).toBuffer(), edit: `jpeg q${quality}` };
  }
  if (kind === 1) {
    const scale = [0.5, 0.75, 1.1, 1.25, 1.5][step]!;
    return {
      bytes: await image
        .resize(Math.round(w * scale), Math.round(h * scale))
        .jpeg({ quality: 90 })
        .toBuffer(),
      edit: `resize ${Math.round(scale * 100)}%`,
    };
  }
  if (kind === 2) {
    const [cw, ch] = [Math.round(w * 0.9), Math.round(h * 0.9)];
    return {
      bytes: await image
        .extract({ left: Math.floor((w - cw) / 2), top: Math.floor((h - ch) / 2), width: cw, height: ch })
        .jpeg({ quality: 90 })
        .toBuffer(),
      edit: 'centre crop 90%',
    };
  }
  const brightness = [0.9, 0.95, 1.05, 1.1, 0.92][step]!;
  return {
    bytes: await image.modulate({ brightness }).jpeg({ quality: 90 }).toBuffer(),
    edit: `brightness ${Math.round((brightness - 1) * 100)}%`,
  };
}

/**
 * A data root with `training/` (the first `perClassTrain` images of each class plus the planted copies) and
 * `validation/` (the first `perClassVal` of each class); the first `plantPerClass` validation images of each class
 * are copied, edited, into training.
 */
export async function plantedDataset(
  monkeys: string,
  root: string,
  counts: { perClassTrain: number; perClassVal: number; plantPerClass: number },
): Promise<Planted[]> {
  const planted: Planted[] = [];
  const classes = (await fs.readdir(path.join(monkeys, 'training'))).sort();
  let n = 0;
  for (const c of classes) {
    for (const [split, count] of [
      ['training', counts.perClassTrain],
      ['validation', counts.perClassVal],
    ] as const) {
      await fs.mkdir(path.join(root, split, c), { recursive: true });
      const files = (await fs.readdir(path.join(monkeys, split, c))).sort().slice(0, count);
      for (const f of files) await fs.copyFile(path.join(monkeys, split, c, f), path.join(root, split, c, f));
      if (split !== 'validation') continue;
      for (const f of files.slice(0, counts.plantPerClass)) {
        const { bytes, edit } = await editedCopy(path.join(monkeys, split, c, f), n++);
        const copy = `training/${c}/planted-${path.parse(f).name}.jpg`;
        await fs.writeFile(path.join(root, copy), bytes);
        planted.push({ source: `validation/${c}/${f}`, copy, edit });
      }
    }
  }
  return planted;
}

/** 32×32 grey thumbnails (aspect ignored) of the whole picture and of its 90 % and 80 % centre crops. */
export async function tiny(file: string): Promise<Float64Array[]> {
  const meta = await sharp(file).rotate().metadata();
  const [w, h] =
    meta.orientation && meta.orientation >= 5
      ? [meta.height ?? 0, meta.width ?? 0]
      : [meta.width ?? 0, meta.height ?? 0];
  const out: Float64Array[] = [];
  for (const f of [1, 0.9, 0.8]) {
    const [cw, ch] = [Math.round(w * f), Math.round(h * f)];
    const raw = await sharp(file)
      .rotate()
      .extract({ left: Math.floor((w - cw) / 2), top: Math.floor((h - ch) / 2), width: cw, height: ch })
      .greyscale()
      .resize(32, 32, { fit: 'fill' })
      .raw()
      .toBuffer();
    out.push(Float64Array.from(raw));
  }
  return out;
}

/** The best correlation between any crop of one picture and any of the other's: high for crops and re-encodes. */
export function pictureSimilarity(a: Float64Array[], b: Float64Array[]): number {
  let best = -1;
  for (const x of a) for (const y of b) best = Math.max(best, correlation(x, y));
  return best;
}

/**
 * Whether two files show the same picture, judged on pixels alone (`pictureSimilarity` ≥ 0.85), so that a test can
 * tell the data set's own train/val copies (monkeys has some) from false matches without trusting the embedding
 * under test.
 */
export async function samePicture(a: string, b: string): Promise<boolean> {
  return pictureSimilarity(await tiny(a), await tiny(b)) >= 0.85;
}

export function correlation(x: Float64Array, y: Float64Array): number {
  const mean = (v: Float64Array) => v.reduce((s, t) => s + t, 0) / v.length;
  const [mx, my] = [mean(x), mean(y)];
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < x.length; i++) {
    sxy += (x[i]! - mx) * (y[i]! - my);
    sxx += (x[i]! - mx) ** 2;
    syy += (y[i]! - my) ** 2;
  }
  return sxy / Math.sqrt(sxx * syy);
}
