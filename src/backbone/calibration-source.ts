/**
 * Where calibration pixels come from: a seeded sample of the user's own images (decoded exactly as extract decodes
 * them), or raw preprocessed tensors (tests, benchmarks). Each source names its images by content hash, so the
 * calibration identity changes when, and only when, the pixels could.
 */
import type { Dataset } from '../dataset/index.js';
import { invalidParameter, positiveInteger } from '../errors.js';
import { type PixelLayout, decodeToRgb, writeNormalised } from '../image/preprocess.js';
import type { ImagePolicy, Preset } from '../image/presets.js';
import { sha256Bytes } from '../util/fsx.js';
import { seededRandom, shuffled } from '../util/random.js';
import type { CalibrationBatch } from './calibrate.js';

export interface CalibrationImage {
  /** Dataset-relative path or another label, for the provenance record. */
  id: string;
  sha256: string;
}

export interface CalibrationSource {
  images: CalibrationImage[];
  /** Everything besides the image bytes that shapes the pixels (preset, EXIF/ICC policy). */
  preprocessing: Record<string, unknown>;
  batches(layout: PixelLayout, batchSize: number): AsyncIterable<CalibrationBatch>;
  /**
   * The source calibration really runs on, where `images` were named before decoding: an image that does not decode
   * is replaced by the next one. Absent where the images are already known to be usable.
   */
  decoded?(): Promise<CalibrationSource>;
}

type DatasetSample = Pick<Dataset, 'items' | 'source'>;
type Item = DatasetSample['items'][number];
/** At most this many bytes of the named images are kept for decoding (a few phone photos; 32 hymenoptera JPEGs ≈ 3 MB). */
const KEPT_BYTES = 64 * 1024 * 1024;
type DatasetCalibrationOptions = { count: number; seed: number; preset: Preset; policy: ImagePolicy };

/**
 * The first `count` images of a seeded shuffle (of the path-sorted items) that decode; unusable images are skipped.
 * `images` names the first `count` that can be read, before any is decoded: a saved int8 model is found by their
 * hashes alone (decoding 32 images was most of a warm `extract --int8`'s setup). A model saved under those hashes was
 * calibrated on exactly those bytes, so they decoded; where none is saved, `decoded()` decodes and may name others.
 * (Settings that only refuse images, such as the pixel limit, are not part of the identity: a model found this way
 * may have been calibrated under another limit, on images this run would also refuse to extract.) The bytes read for
 * the names are kept for `decoded()`, up to KEPT_BYTES, so URLs are not fetched twice.
 */
export async function datasetCalibrationSource(
  dataset: DatasetSample,
  options: DatasetCalibrationOptions,
): Promise<CalibrationSource> {
  positiveInteger('calibrate', options.count);
  const shuffledItems = shuffledSample(dataset.items, options.seed);
  const images: CalibrationImage[] = [];
  const kept = new Map<string, Buffer>();
  let keptBytes = 0;
  for (let i = 0; i < shuffledItems.length && images.length < options.count; i++) {
    const item = shuffledItems[i]!;
    const bytes = await dataset.source.read(item).then(
      (r) => r.bytes,
      () => null,
    );
    if (!bytes || bytes.length === 0) continue;
    images.push({ id: item.path, sha256: sha256Bytes(bytes) });
    if (keptBytes + bytes.length <= KEPT_BYTES) {
      kept.set(item.path, bytes);
      keptBytes += bytes.length;
    }
  }
  const read = async (item: Item) => kept.get(item.path) ?? (await dataset.source.read(item)).bytes;
  let decoding: Promise<CalibrationSource> | undefined;
  const decoded = () => (decoding ??= decodedCalibrationSource(shuffledItems, read, options));
  return {
    images,
    preprocessing: preprocessingOf(options),
    async *batches(layout, batchSize) {
      yield* (await decoded()).batches(layout, batchSize);
    },
    decoded,
  };
}

/** The items, path-sorted, then in the seeded shuffle's order. */
function shuffledSample(items: DatasetSample['items'], seed: number): DatasetSample['items'] {
  const sorted = [...items].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return Array.from(shuffled(sorted.length, seededRandom(seed)), (i) => sorted[i]!);
}

function preprocessingOf(options: DatasetCalibrationOptions): Record<string, unknown> {
  return { preset: { ...options.preset }, exif: options.policy.exif, icc: options.policy.icc };
}

async function decodedCalibrationSource(
  shuffledItems: DatasetSample['items'],
  read: (item: Item) => Promise<Buffer>,
  options: DatasetCalibrationOptions,
): Promise<CalibrationSource> {
  const chosen: { image: CalibrationImage; rgb: Buffer }[] = [];
  for (let i = 0; i < shuffledItems.length && chosen.length < options.count; i++) {
    const item = shuffledItems[i]!;
    try {
      const bytes = await read(item);
      const rgb = await decodeToRgb(bytes, options.preset, options.policy);
      chosen.push({ image: { id: item.path, sha256: sha256Bytes(bytes) }, rgb });
    } catch {
      // Extract records unusable images in its failure ledger; calibration simply takes the next one.
    }
  }
  if (chosen.length === 0)
    throw invalidParameter(
      'calibrate',
      'at least one decodable image in the dataset',
      `none of ${shuffledItems.length}`,
    );
  const crop = options.preset.crop;
  return {
    images: chosen.map((c) => c.image),
    preprocessing: preprocessingOf(options),
    async *batches(layout, batchSize) {
      for (let start = 0; start < chosen.length; start += batchSize) {
        const slice = chosen.slice(start, start + batchSize);
        const data = new Float32Array(slice.length * 3 * crop * crop);
        slice.forEach((c, i) => writeNormalised(c.rgb, options.preset, layout, data, i));
        yield { data, dims: layout === 'NCHW' ? [slice.length, 3, crop, crop] : [slice.length, crop, crop, 3] };
      }
    },
  };
}

/** Already-preprocessed images, each `[3,H,W]` (or `[H,W,3]`) float32, e.g. the fixture's input_K.bin files. */
export function pixelCalibrationSource(
  images: { id: string; pixels: Float32Array }[],
  shape: { height: number; width: number },
): CalibrationSource {
  if (images.length === 0) throw invalidParameter('calibrate', 'at least one calibration image', 0);
  const perImage = 3 * shape.height * shape.width;
  return {
    images: images.map((i) => ({
      id: i.id,
      sha256: sha256Bytes(new Uint8Array(i.pixels.buffer, i.pixels.byteOffset, i.pixels.byteLength)),
    })),
    preprocessing: { preprocessed: true },
    async *batches(layout, batchSize) {
      for (let start = 0; start < images.length; start += batchSize) {
        const slice = images.slice(start, start + batchSize);
        const data = new Float32Array(slice.length * perImage);
        slice.forEach((img, i) => data.set(img.pixels.subarray(0, perImage), i * perImage));
        yield {
          data,
          dims:
            layout === 'NCHW'
              ? [slice.length, 3, shape.height, shape.width]
              : [slice.length, shape.height, shape.width, 3],
        };
      }
    },
  };
}
