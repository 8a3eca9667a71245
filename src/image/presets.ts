/**
 * Preprocessing presets as frozen data. Each maps an 8-bit RGB pixel p (channel c, in `channelOrder`) to
 * (p * scale - mean[c]) / std[c], after resizing the shorter side to `resizeShorter` and centre-cropping `crop`.
 */
import { invalidParameter, oneOf } from '../errors.js';

export interface Preset {
  readonly name: string;
  readonly description: string;
  readonly resizeShorter: number;
  readonly crop: number;
  readonly channelOrder: 'RGB' | 'BGR';
  readonly scale: number;
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
  /**
   * Resize kernel. `pil-bilinear`: Pillow's antialiased bilinear, computed as Pillow does (image/resample.ts), equal
   * to torchvision's Resize on a PIL image. The others are sharp's kernels (`linear` is what presets used before
   * 0.2: ≈ 0.005 mean abs from torchvision); a head or cache records the kernel it was made with.
   */
  readonly kernel: 'pil-bilinear' | 'linear' | 'cubic' | 'mitchell' | 'lanczos3' | 'nearest';
}

const imagenetMean = [0.485, 0.456, 0.406] as const;
const imagenetStd = [0.229, 0.224, 0.225] as const;

const preset = (p: Preset): Preset => Object.freeze(p);

export const PRESETS: Readonly<Record<string, Preset>> = Object.freeze({
  torchvision: preset({
    name: 'torchvision',
    description: 'torchvision ImageNet eval: Resize(256) → CenterCrop(224) → /255 → ImageNet mean/std, RGB',
    resizeShorter: 256,
    crop: 224,
    channelOrder: 'RGB',
    scale: 1 / 255,
    mean: imagenetMean,
    std: imagenetStd,
    kernel: 'pil-bilinear',
  }),
  'torchvision-v2': preset({
    name: 'torchvision-v2',
    description: 'torchvision IMAGENET1K_V2 weights eval: Resize(232) → CenterCrop(224) → ImageNet mean/std, RGB',
    resizeShorter: 232,
    crop: 224,
    channelOrder: 'RGB',
    scale: 1 / 255,
    mean: imagenetMean,
    std: imagenetStd,
    kernel: 'pil-bilinear',
  }),
  caffe: preset({
    name: 'caffe',
    description: 'Keras ResNet50 / Caffe: Resize(256) → CenterCrop(224), BGR, subtract BGR means, no scaling',
    resizeShorter: 256,
    crop: 224,
    channelOrder: 'BGR',
    scale: 1,
    mean: [103.939, 116.779, 123.68],
    std: [1, 1, 1],
    kernel: 'linear',
  }),
  inception: preset({
    name: 'inception',
    description: 'Inception / Keras "tf" mode: Resize(299) → CenterCrop(299), RGB scaled to [-1, 1]',
    resizeShorter: 299,
    crop: 299,
    channelOrder: 'RGB',
    scale: 1 / 127.5,
    mean: [1, 1, 1],
    std: [1, 1, 1],
    kernel: 'linear',
  }),
});

export const PRESET_NAMES: readonly string[] = Object.freeze(Object.keys(PRESETS));

export function getPreset(name: string): Preset {
  const preset = PRESETS[name];
  if (!preset) throw invalidParameter('preset', oneOf(PRESET_NAMES), name);
  return preset;
}

/** Policies for image metadata that decoders disagree on; each run records the one it used. */
export const EXIF_POLICIES = ['ignore', 'apply'] as const;
export type ExifPolicy = (typeof EXIF_POLICIES)[number];
export const ICC_POLICIES = ['ignore', 'convert'] as const;
export type IccPolicy = (typeof ICC_POLICIES)[number];

export interface ImagePolicy {
  /** `ignore` (default) matches PIL/torchvision, which do not rotate by EXIF orientation; `apply` rotates upright. */
  exif: ExifPolicy;
  /** `ignore` (default) matches PIL, which ignores embedded ICC profiles; `convert` converts to sRGB first. */
  icc: IccPolicy;
  /** Images with more pixels are refused before decoding (decompression bombs). PIL's error threshold by default. */
  maxPixels: number;
}

/** JPEG's largest image (65535²): a larger `--max-pixels` only overflows sharp's limit, which then refuses every image. */
export const MAX_PIXELS_LIMIT = 65_535 * 65_535;

/** `--max-pixels`: a positive integer up to MAX_PIXELS_LIMIT. */
export function maxPixelsLimit(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_PIXELS_LIMIT)
    throw invalidParameter('maxPixels', `an integer in [1, ${MAX_PIXELS_LIMIT}] (65535²)`, value);
  return value;
}

export const DEFAULT_IMAGE_POLICY: ImagePolicy = Object.freeze({
  exif: 'ignore',
  icc: 'ignore',
  maxPixels: 178_956_970,
});
