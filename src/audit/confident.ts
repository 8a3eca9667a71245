/**
 * Confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels",
 * JAIR 2021), written from the paper: per-class thresholds, the confident joint, its calibration into the joint
 * distribution of given and true labels, and pruning by noise rate. Every rule below that the paper leaves open is
 * fixed here and matched by the numpy reference in test/support/confident_learning.py:
 * - sums and comparisons in float64 over the float32 probabilities;
 * - a class with no rows has threshold +∞ (no row is ever confidently in it);
 * - a row counts in the confident joint at the above-threshold class with the largest probability, lower class
 *   index on ties (the paper's argmax);
 * - calibration leaves a given class whose row of the confident joint is all zero at zero;
 * - pruning takes n · Q[i][j] rows from cell (i, j), rounded so that each given class's off-diagonal total is
 *   round(n · Σ_{j≠i} Q[i][j]) (halves up; largest remainders first, lower j on ties; see offDiagonalCounts), by
 *   largest margin p(j) − p(i), lower row index on ties; a row pruned for several j is flagged once.
 */

export const RANK_BY = ['self_confidence', 'normalized_margin'] as const;
export type RankBy = (typeof RANK_BY)[number];

/**
 * Which rows the estimated noise flags (the paper's §3.2). prune_by_noise_rate: per off-diagonal cell (i, j), the
 * round(n·Q[i][j]) rows labelled i with the largest margin p(j) − p(i). prune_by_class: per given class i, the
 * round(n·Σ_{j≠i} Q[i][j]) rows labelled i with the lowest self-confidence. both: flagged by both.
 * confident_joint: the rows counted off the diagonal of the confident joint. predicted_neq_given: the rows whose
 * likeliest class is not the given one (the paper's C_confusion baseline).
 */
export const FILTERS = [
  'prune_by_noise_rate',
  'prune_by_class',
  'both',
  'confident_joint',
  'predicted_neq_given',
] as const;
export type FilterBy = (typeof FILTERS)[number];

export interface ConfidentLearning {
  /** Per class: the mean predicted probability of the class over the rows labelled with it. */
  thresholds: Float64Array;
  /** classes × classes, row = given label, column = confidently predicted label (counts). */
  confidentJoint: Float64Array;
  /** classes × classes, the calibrated joint Q(given, true), summing to 1. */
  joint: Float64Array;
  /** classes × classes, P(true = j | given = i): each row of `joint` over its sum (zero rows stay zero). */
  noiseMatrix: Float64Array;
  /** Rows flagged by prune-by-noise-rate, ascending index. */
  flagged: Int32Array;
}

/**
 * `probabilities` is rows × classes out-of-sample predictions (each row scored by a model that never saw it);
 * `labels` the given labels in [0, classes).
 */
export function confidentLearning(
  probabilities: Float32Array,
  labels: Int32Array,
  classes: number,
  filterBy: FilterBy = 'prune_by_noise_rate',
): ConfidentLearning {
  const n = labels.length;
  const thresholds = classThresholds(probabilities, labels, classes);
  const confidentJoint = new Float64Array(classes * classes);
  const offDiagonal: number[] = [];
  for (let r = 0; r < n; r++) {
    const j = confidentClass(probabilities, r, classes, thresholds);
    if (j >= 0) confidentJoint[labels[r]! * classes + j]! += 1;
    if (j >= 0 && j !== labels[r]) offDiagonal.push(r);
  }
  const joint = calibrateJoint(confidentJoint, labels, classes);
  const noiseMatrix = rowNormalised(joint, classes);
  const rows = (): number[] => {
    switch (filterBy) {
      case 'prune_by_noise_rate':
        return pruneByNoiseRate(probabilities, labels, classes, joint);
      case 'prune_by_class':
        return pruneByClass(probabilities, labels, classes, joint);
      case 'both': {
        const byClass = new Set(pruneByClass(probabilities, labels, classes, joint));
        return pruneByNoiseRate(probabilities, labels, classes, joint).filter((r) => byClass.has(r));
      }
      case 'confident_joint':
        return offDiagonal;
      case 'predicted_neq_given':
        return [...labels.keys()].filter((r) => argmax(probabilities, r, classes) !== labels[r]);
    }
  };
  const flagged = Int32Array.from(rows()).sort();
  return { thresholds, confidentJoint, joint, noiseMatrix, flagged };
}

function argmax(probabilities: Float32Array, r: number, classes: number): number {
  let best = 0;
  for (let j = 1; j < classes; j++) if (probabilities[r * classes + j]! > probabilities[r * classes + best]!) best = j;
  return best;
}

/**
 * How many rows to prune from each off-diagonal cell of given class i: n·Q[i][j] rounded so that the row's total is
 * round(n·Σ_{j≠i} Q[i][j]) (largest remainders get the extra rows, lower j on ties). Rounding each cell on its own
 * loses rows when the noise is spread thin: 55 uniform flips over 10 classes are 90 cells of about 0.6 rows each.
 */
function offDiagonalCounts(n: number, joint: Float64Array, i: number, classes: number): Int32Array {
  const exact = new Float64Array(classes);
  let sum = 0;
  for (let j = 0; j < classes; j++) if (j !== i) sum += exact[j] = n * joint[i * classes + j]!;
  const counts = Int32Array.from(exact, (v, j) => (j === i ? 0 : Math.floor(v)));
  let left = Math.floor(sum + 0.5) - counts.reduce((a, b) => a + b, 0);
  const order = [...exact.keys()]
    .filter((j) => j !== i)
    .sort((a, b) => exact[b]! - counts[b]! - (exact[a]! - counts[a]!) || a - b);
  for (const j of order) {
    if (left <= 0) break;
    counts[j]! += 1;
    left--;
  }
  return counts;
}

/** For each given class i: the round(n·Σ_{j≠i} Q[i][j]) rows labelled i with the lowest p(i), lower index on ties. */
function pruneByClass(probabilities: Float32Array, labels: Int32Array, classes: number, joint: Float64Array): number[] {
  const n = labels.length;
  const flagged: number[] = [];
  for (let i = 0; i < classes; i++) {
    let off = 0;
    for (let j = 0; j < classes; j++) if (j !== i) off += joint[i * classes + j]!;
    const take = Math.floor(n * off + 0.5);
    if (take === 0) continue;
    const rows = [...labels.keys()].filter((r) => labels[r] === i);
    const p = (r: number) => probabilities[r * classes + i]!;
    flagged.push(...rows.sort((a, b) => p(a) - p(b) || a - b).slice(0, take));
  }
  return flagged;
}

export function classThresholds(probabilities: Float32Array, labels: Int32Array, classes: number): Float64Array {
  const sums = new Float64Array(classes);
  const counts = new Float64Array(classes);
  labels.forEach((y, r) => {
    sums[y]! += probabilities[r * classes + y]!;
    counts[y]! += 1;
  });
  return sums.map((s, c) => (counts[c]! > 0 ? s / counts[c]! : Infinity));
}

/** The class row `r` is confidently in (at or above its threshold, the likeliest such), or -1 for none. */
function confidentClass(probabilities: Float32Array, r: number, classes: number, thresholds: Float64Array): number {
  let best = -1;
  for (let j = 0; j < classes; j++) {
    const p = probabilities[r * classes + j]!;
    if (p >= thresholds[j]! && (best < 0 || p > probabilities[r * classes + best]!)) best = j;
  }
  return best;
}

/** Each given class's row rescaled to the class's row count, then the whole matrix to a sum of 1 (paper eq. 3). */
function calibrateJoint(confidentJoint: Float64Array, labels: Int32Array, classes: number): Float64Array {
  const counts = new Float64Array(classes);
  for (const y of labels) counts[y]! += 1;
  const calibrated = new Float64Array(classes * classes);
  for (let i = 0; i < classes; i++) {
    let rowSum = 0;
    for (let j = 0; j < classes; j++) rowSum += confidentJoint[i * classes + j]!;
    if (rowSum === 0) continue;
    for (let j = 0; j < classes; j++)
      calibrated[i * classes + j] = (confidentJoint[i * classes + j]! / rowSum) * counts[i]!;
  }
  let total = 0;
  for (const v of calibrated) total += v;
  return total > 0 ? calibrated.map((v) => v / total) : calibrated;
}

function rowNormalised(matrix: Float64Array, classes: number): Float64Array {
  const out = new Float64Array(matrix.length);
  for (let i = 0; i < classes; i++) {
    let rowSum = 0;
    for (let j = 0; j < classes; j++) rowSum += matrix[i * classes + j]!;
    if (rowSum > 0) for (let j = 0; j < classes; j++) out[i * classes + j] = matrix[i * classes + j]! / rowSum;
  }
  return out;
}

/** For each off-diagonal cell (i, j): the round(n·Q[i][j]) rows labelled i with the largest p(j) − p(i). */
function pruneByNoiseRate(
  probabilities: Float32Array,
  labels: Int32Array,
  classes: number,
  joint: Float64Array,
): number[] {
  const n = labels.length;
  const rowsOf: number[][] = Array.from({ length: classes }, () => []);
  labels.forEach((y, r) => rowsOf[y]!.push(r));
  const flagged = new Set<number>();
  for (let i = 0; i < classes; i++) {
    const counts = offDiagonalCounts(n, joint, i, classes);
    for (let j = 0; j < classes; j++) {
      if (i === j) continue;
      const take = counts[j]!;
      if (take === 0) continue;
      const margin = (r: number) => probabilities[r * classes + j]! - probabilities[r * classes + i]!;
      const ranked = [...rowsOf[i]!].sort((a, b) => margin(b) - margin(a) || a - b);
      for (const r of ranked.slice(0, take)) flagged.add(r);
    }
  }
  return [...flagged];
}

/** The row's label-quality score: low = likely wrong. */
export function labelQuality(
  probabilities: Float32Array,
  labels: Int32Array,
  classes: number,
  rank: RankBy,
): Float64Array {
  return Float64Array.from(labels, (y, r) => {
    const given = probabilities[r * classes + y]!;
    if (rank === 'self_confidence') return given;
    let other = -Infinity;
    for (let j = 0; j < classes; j++) if (j !== y) other = Math.max(other, probabilities[r * classes + j]!);
    return given - (classes > 1 ? other : 0);
  });
}

/** The likeliest class other than the given one: the label a flagged row probably should have. */
export function suggestedLabel(probabilities: Float32Array, r: number, given: number, classes: number): number {
  let best = -1;
  for (let j = 0; j < classes; j++)
    if (j !== given && (best < 0 || probabilities[r * classes + j]! > probabilities[r * classes + best]!)) best = j;
  return best < 0 ? given : best;
}
