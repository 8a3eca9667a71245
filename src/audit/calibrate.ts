/**
 * Temperature scaling against the labels the audit does not doubt. The cross-fitted logits are calibrated with one
 * temperature (Guo et al. 2017), but fitting it on the given labels lets the very errors the audit looks for set
 * it: a mislabelled row whose probe is sure of the true class costs a huge NLL, and the fit flattens every
 * prediction to hedge against it. On monkeys with 5 % of labels flipped the temperature fitted on all rows was
 * about 0.45 and the one the clean labels give about 0.2; the flatter probabilities leave many mislabelled rows
 * under their true class's threshold (mean self-confidence), so they are never counted in the confident joint and
 * confident learning misses them (recall 0.76–0.89 over seeds; see README).
 *
 * So the temperature is refitted on the rows confident learning keeps, and confident learning rerun with it, until
 * the flagged rows stop changing: at that point the temperature is the one fitted on exactly the rows the final
 * audit does not flag.
 */
import { fitTemperature } from '../head/metrics.js';
import { softmaxRows } from '../head/model.js';
import { TEMPERATURE_PRIOR } from '../head/plan.js';
import { type FilterBy, confidentLearning } from './confident.js';

/** Rounds of refitting at most; the flags settle in 2–6 on the planted sets. */
export const MAX_CALIBRATION_ROUNDS = 10;

export interface KeptLabelCalibration {
  /** The final temperature: fitted on the rows not flagged under it (the last round's when the flags cycle). */
  temperature: number;
  /** rows × classes, softmax(logits / temperature). */
  probabilities: Float32Array;
  /** Each round's temperature and how many rows confident learning flagged under it; the first is fitted on all. */
  rounds: { temperature: number; flagged: number }[];
  /** Whether the flags settled (a fixed point) within MAX_CALIBRATION_ROUNDS; false for a cycle or the cap. */
  settled: boolean;
}

/** `logits` is rows × classes of out-of-sample logits (scored rows only), `labels` their given labels. */
export function calibrateOnKeptLabels(
  logits: Float32Array,
  labels: Int32Array,
  classes: number,
  filterBy: FilterBy,
  maxRounds = MAX_CALIBRATION_ROUNDS,
): KeptLabelCalibration {
  let temperature = fitTemperature(logits, labels, classes, TEMPERATURE_PRIOR);
  const rounds: KeptLabelCalibration['rounds'] = [];
  const seen: string[] = [];
  for (;;) {
    const probabilities = softmaxRows(logits, classes, temperature);
    const flagged = confidentLearning(probabilities, labels, classes, filterBy).flagged;
    rounds.push({ temperature, flagged: flagged.length });
    const key = flagged.join(',');
    // The same flags as the round before: a fixed point. As an earlier round's: a cycle (seen on one seed of
    // monkeys, between two temperatures 5 % apart), which refitting would only repeat.
    const settled = seen.at(-1) === key;
    if (settled || seen.includes(key) || rounds.length >= maxRounds || flagged.length === labels.length)
      return { temperature, probabilities, rounds, settled };
    seen.push(key);
    const kept = keptRows(labels.length, flagged);
    temperature = fitTemperature(
      gatherRows(logits, kept, classes),
      Int32Array.from(kept, (r) => labels[r]!),
      classes,
      TEMPERATURE_PRIOR,
    );
  }
}

/** The rows of 0..count-1 not in `flagged` (ascending). */
function keptRows(count: number, flagged: Int32Array): number[] {
  const out = new Uint8Array(count).fill(1);
  for (const r of flagged) out[r] = 0;
  return [...out.keys()].filter((r) => out[r] === 1);
}

function gatherRows(matrix: Float32Array, rows: number[], width: number): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(matrix.subarray(r * width, (r + 1) * width), i * width));
  return out;
}
