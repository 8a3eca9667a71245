/** int8 defaults, apart from the quantiser so that --help and the library entry read them without onnxruntime. */
import type { Int8Options } from './quantize.js';

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
