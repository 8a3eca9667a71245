/**
 * One batch decoder for every stage that feeds the backbone (extract, predict, serve): read and decode a batch of
 * images concurrently on libuv's pool, and pack the ones that decoded into one normalised pixel buffer. An image
 * that fails is reported with the stage (read or decode) and the decoder's message; the rest go on.
 */
import { errorMessage } from '../errors.js';
import { type PixelLayout, decodeToRgb, writeNormalised } from './preprocess.js';
import type { ImagePolicy, Preset } from './presets.js';

export interface Loaded<S> {
  bytes: Buffer | string;
  /** Whatever the reader knows about the bytes (e.g. size and mtime); carried to the result. */
  stamp: S;
}

export interface BatchFailure<T, S> {
  item: T;
  stage: 'read' | 'decode';
  message: string;
  /** HTTP status of a failed fetch (an error's numeric `status`). */
  status?: number;
  stamp: S | null;
}

export interface DecodedBatch<T, S> {
  /** Items that decoded, in the order of their slots in `pixels`. */
  ok: { item: T; stamp: S }[];
  failed: BatchFailure<T, S>[];
  /** ok.length images, laid out as the model's input expects. */
  pixels: Float32Array;
  /** Wall time of the whole batch's decoding, overlapping or not with inference. */
  busyS: number;
}

export interface DecodeSpec {
  preset: Preset;
  policy: ImagePolicy;
  layout: PixelLayout;
}

type Outcome<T, S> = { item: T; stamp: S; rgb: Buffer } | BatchFailure<T, S>;

const oneLine = (error: unknown) => errorMessage(error).replace(/\s+/g, ' ').trim();

async function decodeOne<T, S>(
  item: T,
  read: (item: T) => Promise<Loaded<S>>,
  spec: DecodeSpec,
): Promise<Outcome<T, S>> {
  let loaded: Loaded<S>;
  try {
    loaded = await read(item);
  } catch (error) {
    const status = (error as { status?: unknown } | null)?.status;
    return {
      item,
      stage: 'read',
      message: oneLine(error),
      ...(typeof status === 'number' ? { status } : {}),
      stamp: null,
    };
  }
  if (loaded.bytes.length === 0) return { item, stage: 'read', message: 'empty file (0 bytes)', stamp: loaded.stamp };
  try {
    return { item, stamp: loaded.stamp, rgb: await decodeToRgb(loaded.bytes, spec.preset, spec.policy) };
  } catch (error) {
    return { item, stage: 'decode', message: oneLine(error), stamp: loaded.stamp };
  }
}

export async function decodeBatch<T, S>(
  items: readonly T[],
  read: (item: T) => Promise<Loaded<S>>,
  spec: DecodeSpec,
): Promise<DecodedBatch<T, S>> {
  const started = performance.now();
  const outcomes = await Promise.all(items.map((item) => decodeOne(item, read, spec)));
  const decoded = outcomes.filter((o): o is { item: T; stamp: S; rgb: Buffer } => 'rgb' in o);
  const pixels = new Float32Array(decoded.length * pixelsPerImage(spec.preset));
  decoded.forEach((d, slot) => writeNormalised(d.rgb, spec.preset, spec.layout, pixels, slot));
  return {
    ok: decoded.map(({ item, stamp }) => ({ item, stamp })),
    failed: outcomes.filter((o): o is BatchFailure<T, S> => 'stage' in o),
    pixels,
    busyS: (performance.now() - started) / 1000,
  };
}

export function pixelsPerImage(preset: Preset): number {
  return preset.crop * preset.crop * 3;
}

/** A batch's pixel buffer is capped at this many bytes whatever --batch-size says, so memory stays bounded. */
export const MAX_BATCH_BYTES = 256 * 1024 * 1024;

/** The largest batch size whose pixel buffer fits MAX_BATCH_BYTES. */
export function maxBatchSize(preset: Preset): number {
  return Math.max(1, Math.floor(MAX_BATCH_BYTES / (pixelsPerImage(preset) * Float32Array.BYTES_PER_ELEMENT)));
}
