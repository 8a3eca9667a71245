/** Which precision (and int8 calibration) computed features: checked without loading the quantiser. */
import { FeatcacheError, optionName } from '../errors.js';

export interface PrecisionIdentity {
  precision?: 'fp32' | 'fp16' | 'int8' | undefined;
  calibrationHash?: string | undefined;
}

const describePrecision = (p: PrecisionIdentity) =>
  p.precision === 'int8'
    ? `int8 features (calibration ${p.calibrationHash?.slice(0, 12) ?? 'unknown'}…)`
    : `${p.precision ?? 'fp32'} features`;

/**
 * Refuses to feed a head features of another precision or calibration: int8 features differ from FP32 ones by a
 * centred cosine of ~0.97, enough to shift a trained head's decisions, so they are never silently interchanged.
 */
export function checkFeaturePrecision(what: string, trainedOn: PrecisionIdentity, given: PrecisionIdentity): void {
  const int8 = (p: PrecisionIdentity) => p.precision === 'int8';
  const same = int8(trainedOn) === int8(given) && (!int8(given) || trainedOn.calibrationHash === given.calibrationHash);
  if (same) return;
  throw new FeatcacheError(
    `${what}: was trained on ${describePrecision(trainedOn)} but is given ${describePrecision(given)}; int8 and float features (or two int8 calibrations) are not interchangeable — ${int8(trainedOn) ? 'use the int8 backbone it was trained with' : `run without ${optionName('int8')}`} or train a head on these features`,
  );
}
