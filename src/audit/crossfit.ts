/**
 * Out-of-sample probabilities by cross-fitting the default head (the L-BFGS probe): every row is scored by a probe
 * that never saw it. C and the normalisation are chosen once, exactly as train-head chooses them (selectProbe on a
 * hold-out of train), and then fixed for the K fits, so the audit costs one selection and K fits, not K
 * selections. The folds are train-head's stratified, seeded k-fold plan (planSelection), which keeps rows with
 * byte-identical features on one side: a copy in the fit rows would make its twin look certain.
 *
 * Unlike train-head's grouping (duplicateGroups, which splits a picture cached under two labels into two groups),
 * copies are grouped whatever their labels: the audit asks about exactly such conflicts, and a copy under the other
 * label in the fit rows would make the probe learn the conflict instead of judging it.
 */
import { createHash } from 'node:crypto';
import { FeatcacheError } from '../errors.js';
import { MatMul } from '../head/probe/linalg.js';
import { fitTemperature } from '../head/metrics.js';
import type { NormalizationKind } from '../head/normalize.js';
import { GRADIENT_TOLERANCE, MAX_ITERATIONS, type ProbeGrid, selectProbe } from '../head/probe/select.js';
import { fitProbes, probeLogits } from '../head/probe/probe.js';
import { KFOLD, TEMPERATURE_PRIOR, normalisedFold, planSelection } from '../head/plan.js';
import { type HeadOptions, type Split, classWeightsFor, softmaxRows } from '../head/model.js';

export interface CrossFitOptions {
  grid: ProbeGrid;
  /** The hold-out share train-head's selection of C uses. */
  holdoutFraction: number;
  seed: number;
  classWeight: HeadOptions['classWeight'];
  keys: string[];
  classNames: string[];
  /**
   * Choose C on a stratified subsample of this many rows (null: on all rows). train-head does so above the probe's
   * work limit (its streaming path); the audit follows it there so that its selection costs what train-head's does.
   */
  selectionRows: number | null;
  log: (line: string) => void;
}

export interface CrossFit {
  /** rows × classes, out-of-sample logits; rows that no fold could hold out are NaN (see `scored`). */
  logits: Float32Array;
  /** softmax(logits / temperature); NaN where the logits are. */
  probabilities: Float32Array;
  /** Rows with out-of-sample probabilities: all but those of classes with a single distinct image. */
  scored: Uint8Array;
  folds: number;
  c: number;
  normalize: NormalizationKind;
  /** Fitted on every scored row against its given label (the audit refits it: see calibrate.ts). */
  temperature: number;
  /** Held-out accuracy of the cross-fitted probabilities against the given labels. */
  accuracy: number;
  /** Rows C was chosen on (all, or the stratified subsample). */
  selectionRows: number;
  notes: string[];
  seconds: { selection: number; fits: number };
}

/** Calibrated out-of-sample class probabilities for every row of `train` that can be held out. */
export async function crossFitProbabilities(
  train: Split,
  dim: number,
  classes: number,
  o: CrossFitOptions,
): Promise<CrossFit> {
  const mm = new MatMul();
  try {
    const started = performance.now();
    const sample =
      o.selectionRows !== null && o.selectionRows < train.count
        ? stratifiedSample(train.labels, o.keys, o.selectionRows, o.seed)
        : null;
    const selection = await selectProbe(
      sample ? subsetSplit(train, sample, dim) : train,
      dim,
      classes,
      { ...o, keys: sample ? sample.map((r) => o.keys[r]!) : o.keys, monitor: 'val_loss' },
      mm,
    );
    if (typeof selection === 'string') throw new FeatcacheError(`audit: ${selection}; nothing can be cross-fitted`);
    const { c, normalize } = selection.chosen;
    o.log(
      `audit: C ${c} with normalize ${normalize}, chosen as train-head chooses it (${selection.method}, ${selection.heldRows} held-out rows${sample ? ` of a stratified subsample of ${sample.length} rows, as train-head sweeps above the probe's work limit` : ''})`,
    );
    const selectionSeconds = (performance.now() - started) / 1000;
    // A hold-out fraction of 0 always gives the k-fold plan; its note about the hold-out being too small is not
    // news here, the notes before it (classes that cannot be held out) are.
    const plan = planSelection(train.labels, o.keys, o.classNames, 0, o.seed, identicalFeatureGroups(train, dim));
    if (typeof plan === 'string') throw new FeatcacheError(`audit: ${plan}; nothing can be cross-fitted`);
    const notes = plan.notes.slice(0, -1);
    const fitsStarted = performance.now();
    const logits = new Float32Array(train.count * classes).fill(NaN);
    const scored = new Uint8Array(train.count);
    const classWeights = classWeightsFor(o, train.labels, classes);
    for (const [f, fold] of plan.folds.entries()) {
      const { fit, held } = normalisedFold(train, fold, dim, normalize);
      const fits = await fitProbes(
        { features: fit.features, count: fit.count, dim },
        { labels: fit.labels, classes, rowWeights: Float64Array.from(fit.labels, (l) => classWeights[l]!) },
        [c!],
        mm,
        { gradientTolerance: GRADIENT_TOLERANCE / fit.count, maxIterations: MAX_ITERATIONS },
      );
      const [heldLogits] = await probeLogits(fits, { features: held.features, count: held.count, dim }, mm);
      fold.held.forEach((r, i) => {
        logits.set(heldLogits!.subarray(i * classes, (i + 1) * classes), r * classes);
        scored[r] = 1;
      });
      o.log(
        `audit: fold ${f + 1}/${plan.folds.length}: fitted on ${fit.count} rows (${fits.runs[0]!.iterations} L-BFGS iterations), scored ${held.count}`,
      );
    }
    const rows = [...scored.keys()].filter((r) => scored[r] === 1);
    const pooled = new Float32Array(rows.length * classes);
    rows.forEach((r, i) => pooled.set(logits.subarray(r * classes, (r + 1) * classes), i * classes));
    const pooledLabels = Int32Array.from(rows, (r) => train.labels[r]!);
    const temperature = fitTemperature(pooled, pooledLabels, classes, TEMPERATURE_PRIOR);
    const probabilities = softmaxRows(logits, classes, temperature);
    return {
      logits,
      probabilities,
      scored,
      folds: plan.folds.length,
      c: c!,
      normalize,
      temperature,
      accuracy: heldAccuracy(probabilities, train.labels, scored, classes),
      selectionRows: sample ? sample.length : train.count,
      notes,
      seconds: { selection: selectionSeconds, fits: (performance.now() - fitsStarted) / 1000 },
    };
  } finally {
    await mm.dispose();
  }
}

function heldAccuracy(probabilities: Float32Array, labels: Int32Array, scored: Uint8Array, classes: number): number {
  let right = 0;
  let total = 0;
  labels.forEach((y, r) => {
    if (!scored[r]) return;
    total++;
    let best = 0;
    for (let j = 1; j < classes; j++)
      if (probabilities[r * classes + j]! > probabilities[r * classes + best]!) best = j;
    if (best === y) right++;
  });
  return total > 0 ? right / total : 0;
}

/** Rows per class in the subsample at least (train-head-scale's MIN_SUBSAMPLE_PER_CLASS). */
const MIN_SAMPLE_PER_CLASS = 5;

/**
 * A stratified subsample of about `size` rows (ascending): each class's rows with the lowest seeded hash of their
 * key, in proportion to the class's size and at least min(class size, 5), as train-head-scale draws its sweep's
 * subsample. The hash makes it independent of row order.
 */
export function stratifiedSample(labels: Int32Array, keys: string[], size: number, seed: number): number[] {
  const byClass = new Map<number, number[]>();
  labels.forEach((y, r) => {
    const rows = byClass.get(y);
    if (rows) rows.push(r);
    else byClass.set(y, [r]);
  });
  const score = (r: number) => createHash('sha1').update(`featcache-audit-sample\0${seed}\0${keys[r]}`).digest('hex');
  const chosen: number[] = [];
  for (const rows of byClass.values()) {
    const quota = Math.max(
      Math.min(rows.length, MIN_SAMPLE_PER_CLASS),
      Math.round((size * rows.length) / labels.length),
    );
    const scores = new Map(rows.map((r) => [r, score(r)]));
    chosen.push(...rows.sort((a, b) => (scores.get(a)! < scores.get(b)! ? -1 : 1)).slice(0, quota));
  }
  return chosen.sort((a, b) => a - b);
}

function subsetSplit(split: Split, rows: number[], dim: number): Split {
  const features = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => features.set(split.features.subarray(r * dim, (r + 1) * dim), i * dim));
  return { features, labels: Int32Array.from(rows, (r) => split.labels[r]!), count: rows.length };
}

/** Each row's group: the first row with byte-identical features, whatever its label. */
export function identicalFeatureGroups(split: Split, dim: number): Int32Array {
  const first = new Map<string, number>();
  return Int32Array.from({ length: split.count }, (_, r) => {
    const bytes = new Uint8Array(split.features.buffer, split.features.byteOffset + r * dim * 4, dim * 4);
    const key = createHash('sha1').update(bytes).digest('base64');
    if (!first.has(key)) first.set(key, r);
    return first.get(key)!;
  });
}

/** train-head's fold count: the audit's K. */
export const CROSS_FIT_FOLDS = KFOLD;
