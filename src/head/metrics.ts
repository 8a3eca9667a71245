/** Classification metrics from predicted probabilities: top-1, top-k, per-class accuracy and the confusion matrix. */
import { seededRandom } from '../util/random.js';

export interface Metrics {
  count: number;
  top1: number;
  top5: number | null;
  perClass: { name: string; count: number; accuracy: number | null }[];
  /** confusion[true][predicted] */
  confusion: number[][];
}

/** Indices of the k largest values of row `row`, best first. */
export function topK(probabilities: Float32Array, classes: number, row: number, k: number): number[] {
  const base = row * classes;
  return Array.from({ length: classes }, (_, c) => c)
    .sort((a, b) => probabilities[base + b]! - probabilities[base + a]! || a - b)
    .slice(0, k);
}

export function classificationMetrics(probabilities: Float32Array, labels: Int32Array, classNames: string[]): Metrics {
  const classes = classNames.length;
  const confusion = classNames.map(() => new Array<number>(classes).fill(0));
  let top1 = 0;
  let top5 = 0;
  for (let r = 0; r < labels.length; r++) {
    const ranked = topK(probabilities, classes, r, Math.min(5, classes));
    const truth = labels[r]!;
    confusion[truth]![ranked[0]!]! += 1;
    if (ranked[0] === truth) top1++;
    if (ranked.includes(truth)) top5++;
  }
  const n = labels.length;
  return {
    count: n,
    top1: n > 0 ? top1 / n : 0,
    top5: classes >= 5 && n > 0 ? top5 / n : null,
    perClass: classNames.map((name, c) => {
      const count = confusion[c]!.reduce((a, b) => a + b, 0);
      return { name, count, accuracy: count > 0 ? confusion[c]![c]! / count : null };
    }),
    confusion,
  };
}

/** Mean negative log-likelihood of the true class: −mean log p[y] (probabilities clamped at 1e-12, as sklearn's log_loss eps). */
export function negativeLogLikelihood(probabilities: Float32Array, labels: Int32Array, classes: number): number {
  let sum = 0;
  for (let r = 0; r < labels.length; r++) sum -= Math.log(Math.max(probabilities[r * classes + labels[r]!]!, 1e-12));
  return labels.length > 0 ? sum / labels.length : 0;
}

export interface ReliabilityBin {
  /** (lower, upper] confidence range. */
  lower: number;
  upper: number;
  count: number;
  /** Mean top-1 probability of the rows in the bin (null when empty). */
  confidence: number | null;
  /** Top-1 accuracy of the rows in the bin (null when empty). */
  accuracy: number | null;
}

/** A top-1 probability's reliability bin. Bins are (lower, upper]: a confidence of exactly k/bins is in bin k-1. */
function binOf(p: number, bins: number): number {
  return Math.min(bins - 1, Math.max(0, Math.ceil(p * bins) - 1));
}

/**
 * Expected calibration error (Guo et al. 2017): rows binned by top-1 probability into `bins` equal-width bins,
 * ECE = Σ_b |B_b|/n · |accuracy(B_b) − confidence(B_b)|. Also returns the bins (the reliability diagram).
 */
export function expectedCalibrationError(
  probabilities: Float32Array,
  labels: Int32Array,
  classes: number,
  bins = 15,
): { ece: number; bins: ReliabilityBin[] } {
  const count = new Array<number>(bins).fill(0);
  const confidence = new Array<number>(bins).fill(0);
  const correct = new Array<number>(bins).fill(0);
  for (let r = 0; r < labels.length; r++) {
    let best = 0;
    for (let c = 1; c < classes; c++)
      if (probabilities[r * classes + c]! > probabilities[r * classes + best]!) best = c;
    const p = probabilities[r * classes + best]!;
    const b = binOf(p, bins);
    count[b]! += 1;
    confidence[b]! += p;
    if (best === labels[r]) correct[b]! += 1;
  }
  let ece = 0;
  const n = labels.length;
  const out = count.map((k, b) => {
    if (k > 0) ece += (k / n) * Math.abs(correct[b]! / k - confidence[b]! / k);
    return {
      lower: b / bins,
      upper: (b + 1) / bins,
      count: k,
      confidence: k > 0 ? confidence[b]! / k : null,
      accuracy: k > 0 ? correct[b]! / k : null,
    };
  });
  return { ece: n > 0 ? ece : 0, bins: out };
}

/** NLL of softmax(logits / temperature), in float64. */
export function temperatureNll(logits: Float32Array, labels: Int32Array, classes: number, temperature: number): number {
  let sum = 0;
  for (const v of rowNlls(logits, labels, classes, temperature)) sum += v;
  return labels.length > 0 ? sum / labels.length : 0;
}

/** Each row's NLL under softmax(logits / temperature), in float64 with the max subtracted. */
export function rowNlls(logits: Float32Array, labels: Int32Array, classes: number, temperature: number): Float64Array {
  return Float64Array.from(labels, (y, r) => {
    const o = r * classes;
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[o + c]! / temperature);
    let s = 0;
    for (let c = 0; c < classes; c++) s += Math.exp(logits[o + c]! / temperature - max);
    return max + Math.log(s) - logits[o + y]! / temperature;
  });
}

/**
 * Temperature scaling (Guo et al. 2017): the one scalar T > 0 minimising the NLL of softmax(logits / T). The NLL is
 * convex in 1/T, so a golden-section search over log(1/T) in [1/100, 100] finds the global minimum.
 *
 * `priorWeight` λ adds λ·(log T)² / n to the mean NLL (MAP with a log-normal prior on T around 1). On a small,
 * nearly error-free hold-out the plain minimum runs off towards T → 0 (any sharpening lowers the NLL of rows that
 * are all right), which over-sharpens the head on new data; the prior keeps T near 1 unless the rows say otherwise.
 */
export function fitTemperature(logits: Float32Array, labels: Int32Array, classes: number, priorWeight = 0): number {
  if (labels.length === 0) return 1;
  const n = labels.length;
  const f = (logBeta: number) =>
    temperatureNll(logits, labels, classes, Math.exp(-logBeta)) + (priorWeight * logBeta * logBeta) / n;
  const ratio = (Math.sqrt(5) - 1) / 2;
  let [a, b] = [Math.log(0.01), Math.log(100)];
  let c = b - ratio * (b - a);
  let d = a + ratio * (b - a);
  let [fc, fd] = [f(c), f(d)];
  for (let i = 0; i < 80 && b - a > 1e-7; i++) {
    if (fc < fd) {
      [b, d, fd] = [d, c, fc];
      c = b - ratio * (b - a);
      fc = f(c);
    } else {
      [a, c, fc] = [c, d, fd];
      d = a + ratio * (b - a);
      fd = f(d);
    }
  }
  return Math.exp(-(a + b) / 2);
}

/**
 * The ECE that sampling alone gives: what a perfectly calibrated head with these confidences would show on this many
 * rows. Each simulation draws every row's correctness with its own top-1 probability and bins it as
 * expectedCalibrationError does. On a few hundred rows this floor is several hundredths (≈ 0.05 on 400 rows at 60 %
 * top-1), so an ECE near it is as calibrated as the rows can tell; README's calibration section reads it that way.
 */
export function eceSamplingFloor(
  probabilities: Float32Array,
  classes: number,
  { bins = 15, simulations = 200, seed = 0 } = {},
): { mean: number; p95: number } {
  const n = classes > 0 ? probabilities.length / classes : 0;
  if (n === 0) return { mean: 0, p95: 0 };
  const confidence = Float64Array.from({ length: n }, (_, r) => {
    let best = 0;
    for (let c = 0; c < classes; c++) best = Math.max(best, probabilities[r * classes + c]!);
    return best;
  });
  const bin = Int32Array.from(confidence, (p) => binOf(p, bins));
  const [count, confidenceSum] = [new Float64Array(bins), new Float64Array(bins)];
  for (let r = 0; r < n; r++) {
    count[bin[r]!]! += 1;
    confidenceSum[bin[r]!]! += confidence[r]!;
  }
  const random = seededRandom(seed);
  const correct = new Float64Array(bins);
  const eces = Array.from({ length: simulations }, () => {
    correct.fill(0);
    for (let r = 0; r < n; r++) if (random() < confidence[r]!) correct[bin[r]!]! += 1;
    let ece = 0;
    for (let b = 0; b < bins; b++) ece += Math.abs(correct[b]! - confidenceSum[b]!) / n;
    return ece;
  }).sort((a, b) => a - b);
  return { mean: eces.reduce((a, b) => a + b, 0) / simulations, p95: eces[Math.floor(0.95 * (simulations - 1))]! };
}

export interface CalibrationReport {
  temperature: number;
  /** 15-bin ECE and NLL of the uncalibrated softmax. */
  before: { ece: number; nll: number };
  /**
   * The same after dividing the logits by `temperature`, and the ECE a perfectly calibrated head with the calibrated
   * confidences would show on these rows (eceSamplingFloor: its mean and 95th percentile).
   */
  after: { ece: number; nll: number; eceFloor: { mean: number; p95: number } };
  bins: { before: ReliabilityBin[]; after: ReliabilityBin[] };
}

export function calibrationReport(
  logits: Float32Array,
  labels: Int32Array,
  classes: number,
  temperature: number,
  softmax: (logits: Float32Array, classes: number, t: number) => Float32Array,
): CalibrationReport {
  const pBefore = softmax(logits, classes, 1);
  const pAfter = softmax(logits, classes, temperature);
  const eBefore = expectedCalibrationError(pBefore, labels, classes);
  const eAfter = expectedCalibrationError(pAfter, labels, classes);
  return {
    temperature,
    before: { ece: eBefore.ece, nll: negativeLogLikelihood(pBefore, labels, classes) },
    after: {
      ece: eAfter.ece,
      nll: negativeLogLikelihood(pAfter, labels, classes),
      eceFloor: eceSamplingFloor(pAfter, classes),
    },
    bins: { before: eBefore.bins, after: eAfter.bins },
  };
}
