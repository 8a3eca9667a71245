/**
 * Decoding and preprocessing with sharp, reproducing torchvision's eval transform geometry exactly
 * (Resize truncates the long side, CenterCrop rounds half to even) so features match PyTorch's.
 */
import type { Metadata, SharpOptions } from 'sharp';
import type { ImagePolicy, Preset } from './presets.js';
import { resizeBilinearWindow } from './resample.js';

let sharpLoaded: Promise<(typeof import('sharp'))['default']> | undefined;

/** sharp (libvips, ~130 ms to load) is imported on the first decode, so importing featcache does not pay for it. */
function loadSharp(): Promise<(typeof import('sharp'))['default']> {
  sharpLoaded ??= import('sharp').then(({ default: sharp }) => {
    // Parallelism comes from decoding several images at once on libuv's pool, not from threads inside one image.
    sharp.concurrency(1);
    sharp.cache(false);
    return sharp;
  });
  return sharpLoaded;
}

/** Where channels sit in the model's input tensor. */
export type PixelLayout = 'NCHW' | 'NHWC';

/** Python's round(): half to even. torchvision's CenterCrop uses it for offsets. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** torchvision Resize(size) with an int size: the shorter side becomes `size`, the longer is truncated. */
export function resizedSize(width: number, height: number, shorter: number): { width: number; height: number } {
  if (width <= height) return { width: shorter, height: Math.trunc((shorter * height) / width) };
  return { width: Math.trunc((shorter * width) / height), height: shorter };
}

export function centreCropOffsets(width: number, height: number, crop: number): { left: number; top: number } {
  return { left: roundHalfEven((width - crop) / 2), top: roundHalfEven((height - crop) / 2) };
}

function orientedSize(meta: Metadata, policy: ImagePolicy): { width: number; height: number } {
  const width = meta.width ?? 0;
  const height = meta.height ?? 0;
  const swaps = policy.exif === 'apply' && (meta.orientation ?? 1) >= 5;
  return swaps ? { width: height, height: width } : { width, height };
}

/** Decodes one image into the preset's crop as 8-bit sRGB, interleaved RGB (crop × crop × 3). */
export async function decodeToRgb(input: Buffer | string, preset: Preset, policy: ImagePolicy): Promise<Buffer> {
  const options: SharpOptions = {
    failOn: 'error',
    limitInputPixels: policy.maxPixels,
    autoOrient: policy.exif === 'apply',
    ignoreIcc: policy.icc === 'ignore',
    pages: 1,
  };
  if (preset.kernel === 'pil-bilinear') return decodeToRgbPil(input, preset, options);
  const sharp = await loadSharp();
  const meta = await sharp(input, options).metadata();
  const source = orientedSize(meta, policy);
  const target = resizedSize(source.width, source.height, preset.resizeShorter);
  const offset = centreCropOffsets(target.width, target.height, preset.crop);
  const { data, info } = await sharp(input, options)
    .resize(target.width, target.height, { fit: 'fill', kernel: preset.kernel, fastShrinkOnLoad: false })
    .extract({ left: offset.left, top: offset.top, width: preset.crop, height: preset.crop })
    .removeAlpha()
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || data.length !== preset.crop * preset.crop * 3) {
    throw new Error(
      `decoded to ${info.channels} channels of ${info.width}×${info.height}, expected 3 of ${preset.crop}×${preset.crop}`,
    );
  }
  return data;
}

/**
 * torchvision's Resize(resizeShorter) then CenterCrop(crop) on a width × height image: the resized size and the crop's
 * window in it. Refuses a crop that does not fit the resized image.
 */
export function cropGeometry(
  width: number,
  height: number,
  preset: Pick<Preset, 'resizeShorter' | 'crop'>,
): { target: { width: number; height: number }; window: { left: number; top: number; width: number; height: number } } {
  const target = resizedSize(width, height, preset.resizeShorter);
  const offset = centreCropOffsets(target.width, target.height, preset.crop);
  if (
    offset.left < 0 ||
    offset.top < 0 ||
    offset.left + preset.crop > target.width ||
    offset.top + preset.crop > target.height
  ) {
    throw new Error(`resized to ${target.width}×${target.height}, smaller than the ${preset.crop}×${preset.crop} crop`);
  }
  return { target, window: { left: offset.left, top: offset.top, width: preset.crop, height: preset.crop } };
}

/**
 * The `pil-bilinear` kernel: sharp decodes the whole image to 8-bit sRGB (as PIL's `convert("RGB")`), and the resize
 * and crop are Pillow's own arithmetic (resample.ts), so the crop equals torchvision's on the PIL image.
 */
async function decodeToRgbPil(input: Buffer | string, preset: Preset, options: SharpOptions): Promise<Buffer> {
  const sharp = await loadSharp();
  const { data, info } = await sharp(input, options)
    .removeAlpha()
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
  const { target, window } = cropGeometry(info.width, info.height, preset);
  const crop = resizeBilinearWindow(data, info.width, info.height, 3, target, window);
  return Buffer.from(crop.buffer, crop.byteOffset, crop.byteLength);
}

/**
 * Writes one decoded RGB crop into `out` at image slot `index`, normalised by the preset and laid out as the
 * model's input expects.
 */
export function writeNormalised(
  rgb: Uint8Array,
  preset: Preset,
  layout: PixelLayout,
  out: Float32Array,
  index: number,
): void {
  const pixels = preset.crop * preset.crop;
  const base = index * pixels * 3;
  const [s0, s1, s2] = preset.channelOrder === 'RGB' ? [0, 1, 2] : [2, 1, 0];
  const [m0, m1, m2] = preset.std.map((s) => preset.scale / s) as [number, number, number];
  const [a0, a1, a2] = preset.mean.map((m, c) => -m / preset.std[c]!) as [number, number, number];
  // One pass over the pixels, three channels at a time (a pass per channel read the crop three times).
  const [o0, o1, o2, step] =
    layout === 'NCHW' ? [base, base + pixels, base + 2 * pixels, 1] : [base, base + 1, base + 2, 3];
  for (let p = 0, q = 0, o = 0; p < pixels; p++, q += 3, o += step) {
    out[o0 + o] = rgb[q + s0]! * m0 + a0;
    out[o1 + o] = rgb[q + s1]! * m1 + a1;
    out[o2 + o] = rgb[q + s2]! * m2 + a2;
  }
}

export async function preprocess(
  input: Buffer | string,
  preset: Preset,
  policy: ImagePolicy,
  layout: PixelLayout,
): Promise<Float32Array> {
  const out = new Float32Array(preset.crop * preset.crop * 3);
  writeNormalised(await decodeToRgb(input, preset, policy), preset, layout, out, 0);
  return out;
}
