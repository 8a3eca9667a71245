/**
 * int8 defaults, recipe version and option checks, apart from the quantiser so that --help, the library entry and a
 * run that reuses a saved int8 model read them without onnxruntime or the protobuf code.
 */
import { invalidParameter, oneOf } from '../errors.js';
import type { Int8Options } from './quantize.js';

/** Bumped whenever the graph surgery or parameter rules change: saved models of another version are rebuilt. */
export const INT8_RECIPE = 'qdq-u8act-s8w-perchannel-v1';

/** How calibration picks each activation's range (the CLI lists these). */
export const RANGE_METHODS = ['minmax', 'percentile', 'mse'] as const;
export type RangeMethod = (typeof RANGE_METHODS)[number];

export const DEFAULT_INT8_OPTIONS: Readonly<Int8Options> = Object.freeze({
  calibrate: 32,
  calibrationRanges: 'mse',
  calibrationPercentile: 99.99,
  seed: 0,
  // mse and percentile read every quantised activation back: 2 ResNet50 images ≈ 150 MB of them.
  calibrationBatch: 2,
});

export function checkRangeOptions(options: { method: RangeMethod; percentile: number }): void {
  if (!RANGE_METHODS.includes(options.method))
    throw invalidParameter('calibrationRanges', oneOf(RANGE_METHODS), options.method);
  if (!(options.percentile > 50 && options.percentile <= 100))
    throw invalidParameter('calibrationPercentile', 'a number in (50, 100], e.g. 99.99', options.percentile);
}
