/** Flags shared by several commands, each documented with its default, so every command spells them the same. */
import type { Options } from 'yargs';
import { parseDevice } from '../backbone/session.js';
import { FeatcacheError } from '../errors.js';
import { DEFAULT_IMAGE_POLICY, EXIF_POLICIES, ICC_POLICIES, type ImagePolicy, PRESET_NAMES, parseChoice } from '../image/presets.js';

/**
 * Parsed yargs arguments. yargs' inferred types do not survive option objects shared between commands, so handlers
 * read this loose record and validate each value they use (positiveInteger, parseChoice, …).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Args = Record<string, any>;

export const DEFAULT_CACHE = './features';
export const DEFAULT_MODEL = 'models/resnet50.onnx';
export const DEFAULT_HEAD = 'models/head';

export const cacheOption: Options = { type: 'string', default: DEFAULT_CACHE, describe: 'feature cache directory' };
export const jsonOption: Options = { type: 'boolean', default: false, describe: 'machine-readable JSON on stdout' };

export const backboneOptions = {
  model: { type: 'string', default: DEFAULT_MODEL, describe: 'ONNX backbone file' },
  tap: { type: 'string', default: 'avgpool', describe: 'tensor to tap: "avgpool" (the pool feeding the classifier), a node, tensor or PyTorch module name' },
  device: { type: 'string', default: 'auto', describe: 'auto | cpu | cuda | cuda:N (auto tries CUDA, then CPU)' },
  threads: { type: 'number', default: 0, describe: 'onnxruntime intra-op threads (0 = one per core)' },
  'batch-size': { type: 'number', default: 16, describe: 'images per inference call' },
} satisfies Record<string, Options>;

export const imageOptions = {
  preset: { type: 'string', default: 'torchvision', choices: PRESET_NAMES as string[], describe: 'preprocessing preset' },
  exif: { type: 'string', default: DEFAULT_IMAGE_POLICY.exif, choices: [...EXIF_POLICIES], describe: 'EXIF orientation: ignore (as PIL/torchvision) or apply (rotate upright)' },
  icc: { type: 'string', default: DEFAULT_IMAGE_POLICY.icc, choices: [...ICC_POLICIES], describe: 'embedded colour profiles: ignore (as PIL) or convert to sRGB' },
  'max-pixels': { type: 'number', default: DEFAULT_IMAGE_POLICY.maxPixels, describe: 'refuse images with more pixels (decompression bombs)' },
} satisfies Record<string, Options>;

export const debugOption: Options = { type: 'boolean', default: false, describe: 'print stack traces for errors' };

export function imagePolicyFrom(argv: Args): ImagePolicy {
  return {
    exif: parseChoice('--exif', argv.exif, EXIF_POLICIES),
    icc: parseChoice('--icc', argv.icc, ICC_POLICIES),
    maxPixels: positiveInteger('--max-pixels', argv['max-pixels']),
  };
}

export function positiveInteger(flag: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new FeatcacheError(`${flag}: expected a positive integer, got ${value}`);
  return value;
}

export function nonNegativeInteger(flag: string, value: number): number {
  if (!Number.isInteger(value) || value < 0) throw new FeatcacheError(`${flag}: expected an integer >= 0, got ${value}`);
  return value;
}

export { parseDevice };

/** Prints a result as JSON or as the human line(s). */
export function emit(json: boolean, result: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(result)}\n` : `${human()}\n`);
}
