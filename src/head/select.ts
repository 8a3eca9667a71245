/**
 * Choosing the head's hyperparameters on data the reported metric never sees: a stratified, seeded hold-out of the
 * train split (or stratified k-fold when a hold-out would be too small), never the val split. The chosen setting
 * is then refit on all of train, and a temperature is fitted on the held-out predictions.
 */
import { createHash } from 'node:crypto';
import { hashScore, stratifiedSplit } from '../dataset/split.js';
import { FeatcacheError } from '../errors.js';
import { fitTemperature, temperatureNll as temperatureNllOf } from './metrics.js';
import { type NormalizationKind, applyNormalization, fitNormalization } from './normalize.js';
import type { Tf } from './runtime.js';
import { type LrWd, type SweepCurves, bestEpochOf, combineFolds, ortHeldOutLogits, sweepCurves } from './sweep.js';
import { type HeadOptions, type Split, fitHead, predictLogits } from './train.js';
import { DEFAULT_SWEEP_GRID, MIN_SWEEP_STEPS } from './sweep-grid.js';

export interface SweepGrid {
  /** The L-BFGS probe's inverse L2 strengths (scikit-learn's C). */
  c: readonly number[];
  /** Mini-batch training: learning rates and weight decays. */
  lr: readonly number[];
  weightDecay: readonly number[];
  normalize: readonly NormalizationKind[];
}

export { DEFAULT_SWEEP_GRID, MIN_SWEEP_STEPS };
/** A hold-out smaller than this selects on noise: use k-fold instead. */
export const MIN_HOLDOUT_ROWS = 50;
export const KFOLD = 5;

/** Epochs that give at least `minSteps` optimiser steps on the smallest fold (at least `epochs`). */
export function sweepEpochBudget(epochs: number, fitRows: number, batchSize: number, minSteps: number): number {
  const stepsPerEpoch = Math.max(1, Math.ceil(fitRows / batchSize));
  return Math.max(epochs, Math.ceil(minSteps / stepsPerEpoch));
}

/** Weight of the log-normal prior on the temperature (σ = 1/√(2λ) = 0.5 in log T): see fitTemperature. */
export const TEMPERATURE_PRIOR = 2;

export interface Fold {
  fit: number[];
  held: number[];
}

export interface SelectionPlan {
  method: 'holdout' | 'kfold';
  folds: Fold[];
  /** Lines worth telling the user (classes that cannot be held out, why k-fold). */
  notes: string[];
}

/**
 * Stratified hold-out (fraction of each class, seeded by path) when it gives at least MIN_HOLDOUT_ROWS rows and
 * every class that can be held out is; otherwise stratified k-fold. A class with one image is always trained on
 * and never held out. Returns a reason string when nothing can be held out at all.
 */
export function planSelection(
  labels: Int32Array,
  keys: string[],
  classNames: string[],
  fraction: number,
  seed: number,
  groups?: Int32Array,
): SelectionPlan | string {
  // Rows of one group (identical features: duplicate images) always fall on the same side, or the hold-out would
  // score memorised copies and favour overfitting. Planning is done on one representative row per group.
  const groupOf = groups ?? Int32Array.from(labels.keys());
  const members = new Map<number, number[]>();
  labels.forEach((_, r) => {
    const list = members.get(groupOf[r]!) ?? [];
    list.push(r);
    members.set(groupOf[r]!, list);
  });
  const reps = [...members.values()].map((m) => m[0]!);
  const expand = (rs: number[]) => rs.flatMap((r) => members.get(groupOf[r]!)!).sort((a, b) => a - b);
  const counts = new Map<number, number>();
  for (const r of reps) counts.set(labels[r]!, (counts.get(labels[r]!) ?? 0) + 1);
  const singles = [...counts]
    .filter(([, n]) => n === 1)
    .map(([c]) => c)
    .sort((a, b) => a - b);
  const rows = [...labels.keys()];
  const eligible = reps.filter((r) => counts.get(labels[r]!)! >= 2);
  const notes: string[] = [];
  if (singles.length > 0) {
    const names = singles.map((c) => JSON.stringify(classNames[c] ?? String(c)));
    notes.push(
      `class${singles.length > 1 ? 'es' : ''} ${names.slice(0, 5).join(', ')}${names.length > 5 ? ` and ${names.length - 5} more` : ''} ha${singles.length > 1 ? 've' : 's'} one distinct training image: it cannot be held out, so selection does not score ${singles.length > 1 ? 'them' : 'it'} (still trained on)`,
    );
  }
  if (eligible.length === 0)
    return 'no class has two distinct training images, so nothing can be held out to choose hyperparameters on';
  const classesToHold = new Set(eligible.map((r) => labels[r]!));
  const split = stratifiedSplit(
    eligible,
    (r) => String(labels[r]),
    (r) => keys[r]!,
    fraction,
    seed,
  );
  const val = expand(split.val);
  const heldClasses = new Set(val.map((r) => labels[r]!));
  if (val.length >= MIN_HOLDOUT_ROWS && heldClasses.size === classesToHold.size) {
    const held = new Set(val);
    return { method: 'holdout', folds: [{ fit: rows.filter((r) => !held.has(r)), held: val }], notes };
  }
  const fold = new Map<number, number>();
  for (const c of classesToHold) {
    const ranked = eligible
      .filter((r) => labels[r] === c)
      .sort((a, b) => hashScore(seed, keys[a]!) - hashScore(seed, keys[b]!));
    ranked.forEach((r, i) => {
      for (const m of members.get(groupOf[r]!)!) fold.set(m, i % KFOLD);
    });
  }
  const folds: Fold[] = [];
  for (let k = 0; k < KFOLD; k++) {
    const held = rows.filter((r) => fold.get(r) === k);
    if (held.length > 0) folds.push({ fit: rows.filter((r) => fold.get(r) !== k), held });
  }
  // A class with fewer distinct images than KFOLD leaves folds empty: say how many there really are.
  const fewer = folds.length < KFOLD ? ` (not ${KFOLD}: the largest class has ${folds.length} distinct images)` : '';
  notes.push(
    `a ${Math.round(fraction * 100)}% hold-out would have ${val.length} rows (fewer than ${MIN_HOLDOUT_ROWS}, or a class missing): selecting by stratified ${folds.length}-fold instead${fewer}`,
  );
  return { method: 'kfold', folds, notes };
}

function featureKey(split: Split, dim: number, r: number): string {
  const bytes = new Uint8Array(split.features.buffer, split.features.byteOffset + r * dim * 4, dim * 4);
  return createHash('sha1').update(bytes).digest('base64');
}

/**
 * Group ids for rows with byte-identical features and the same label (duplicate images); each row's id is its
 * group's first row. The same picture under two labels is two groups: each is its class's image.
 */
export function duplicateGroups(split: Split, dim: number): Int32Array {
  const first = new Map<string, number>();
  return Int32Array.from({ length: split.count }, (_, r) => {
    const key = `${split.labels[r]}:${featureKey(split, dim, r)}`;
    if (!first.has(key)) first.set(key, r);
    return first.get(key)!;
  });
}

/** Rows whose features equal those of a row with another label: the same picture labelled twice, probably by mistake. */
export function conflictingDuplicates(split: Split, dim: number): number {
  const labelsOf = new Map<string, Set<number>>();
  const keys = Array.from({ length: split.count }, (_, r) => featureKey(split, dim, r));
  keys.forEach((k, r) => labelsOf.set(k, (labelsOf.get(k) ?? new Set()).add(split.labels[r]!)));
  return keys.filter((k) => labelsOf.get(k)!.size > 1).length;
}

export function subsetRows(split: Split, rows: number[], dim: number): Split {
  const features = new Float32Array(rows.length * dim);
  rows.forEach((row, k) => features.set(split.features.subarray(row * dim, (row + 1) * dim), k * dim));
  return { features, labels: Int32Array.from(rows, (r) => split.labels[r]!), count: rows.length };
}

/** A fold's fit and held-out rows, normalised with statistics fitted on the fit rows only. */
export function normalisedFold(
  train: Split,
  fold: Fold,
  dim: number,
  kind: NormalizationKind,
): { fit: Split; held: Split } {
  const fit = subsetRows(train, fold.fit, dim);
  const held = subsetRows(train, fold.held, dim);
  const n = fitNormalization(kind, fit.features, fit.count, dim);
  applyNormalization(n, fit.features, fit.count, dim);
  applyNormalization(n, held.features, held.count, dim);
  return { fit, held };
}

export interface SweepRow {
  normalize: NormalizationKind;
  /** Mini-batch candidates: the learning rate (null for the probe, which has none). */
  lr: number | null;
  /** The probe's C (scikit-learn's inverse L2 strength); null for mini-batch candidates. */
  c: number | null;
  /** L2 strength λ: PyTorch's weight_decay for mini-batch candidates, 1/(C·n) for the probe (n = all train rows). */
  weightDecay: number;
  /** Epoch with the best held-out score (1-based); null for the probe, which runs to convergence. */
  epoch: number | null;
  /** The probe's L-BFGS iterations (the most over the folds). */
  iterations?: number;
  holdoutLoss: number;
  holdoutAcc: number;
  /**
   * Held-out NLL after the best temperature: every probe candidate; for mini-batch candidates, each
   * normalisation's best (the finalists; null for the rest). Candidates are compared on it because the saved head
   * is calibrated the same way: what matters is how well the logits rank, not how sharp they are before scaling.
   */
  calibratedLoss: number | null;
  /** The probe: within one standard error of the best calibrated NLL (a tie the rule may choose). */
  tied?: boolean;
}

/** A mini-batch candidate: it has a learning rate and a best epoch, no C. */
export type MinibatchRow = SweepRow & { lr: number; epoch: number; c: null };

export interface Selection {
  method: 'holdout' | 'kfold';
  folds: number;
  /** Held-out rows over all folds (each train row at most once). */
  heldRows: number;
  table: SweepRow[];
  chosen: MinibatchRow;
  /** Fitted on the chosen setting's held-out logits. */
  temperature: number;
  /** Held-out NLL before/after the temperature. */
  heldNll: { before: number; after: number };
  seconds: number;
  gflops: number;
  gflopsPerSecond: number;
}

export interface SelectOptions {
  grid: SweepGrid;
  /** Fixed number of epochs (the user gave one), or undefined to choose the best epoch up to `options.epochs`. */
  fixedEpochs?: number | undefined;
  holdoutFraction: number;
  patience: number;
  keys: string[];
  classNames: string[];
  log: (line: string) => void;
  /** tfjs, or onnxruntime for the wide linear pass and the finalists' refits (default tfjs). */
  engine?: 'tfjs' | 'onnxruntime';
  /** When the epochs are not fixed: train each candidate for at least this many optimiser steps (default 0). */
  minSteps?: number;
}

/**
 * Sweeps the grid on the planned folds; each normalisation's best candidate (held-out loss) is refit per fold to
 * fit a temperature, and the one with the lowest calibrated held-out NLL wins (with `val_acc`: the most accurate).
 */
/** @internal */
export async function selectSetting(
  tf: Tf,
  train: Split,
  dim: number,
  classes: number,
  options: HeadOptions,
  select: SelectOptions,
): Promise<Selection | string> {
  const plan = planSelection(
    train.labels,
    select.keys,
    select.classNames,
    select.holdoutFraction,
    options.seed,
    duplicateGroups(train, dim),
  );
  if (typeof plan === 'string') return plan;
  for (const note of plan.notes) select.log(`train-head: ${note}`);
  const started = performance.now();
  if (select.fixedEpochs === undefined && (select.minSteps ?? 0) > 0) {
    const fitRows = Math.min(...plan.folds.map((f) => f.fit.length));
    const epochs = sweepEpochBudget(options.epochs, fitRows, options.batchSize, select.minSteps!);
    if (epochs > options.epochs)
      select.log(
        `train-head: ${fitRows} rows per fold are ${Math.ceil(fitRows / options.batchSize)} step(s) an epoch: sweeping up to ${epochs} epochs (at least ${select.minSteps} optimiser steps)`,
      );
    options = { ...options, epochs };
  }
  const candidates: LrWd[] = select.grid.lr.flatMap((lr) =>
    select.grid.weightDecay.map((weightDecay) => ({ lr, weightDecay })),
  );
  if (candidates.length === 0 || select.grid.normalize.length === 0)
    throw new FeatcacheError('train-head: the sweep grid is empty');
  const table: MinibatchRow[] = [];
  const better = (a: MinibatchRow, b: MinibatchRow) =>
    options.monitor === 'val_acc'
      ? a.holdoutAcc > b.holdoutAcc || (a.holdoutAcc === b.holdoutAcc && a.holdoutLoss < b.holdoutLoss)
      : a.holdoutLoss < b.holdoutLoss;
  const calibrated: { row: MinibatchRow; temperature: number; before: number; after: number }[] = [];
  let flops = 0;
  let sweepSeconds = 0;
  for (const normalize of select.grid.normalize) {
    const folds: { curves: SweepCurves; weight: number }[] = [];
    for (const fold of plan.folds) {
      const { fit, held } = normalisedFold(train, fold, dim, normalize);
      const run = { patience: select.fixedEpochs === undefined ? select.patience : 0, engine: select.engine ?? 'tfjs' };
      folds.push({
        curves: await sweepCurves(tf, fit, held, dim, classes, candidates, options, run),
        weight: held.count,
      });
    }
    const curves: SweepCurves = combineFolds(folds);
    flops += curves.flops;
    sweepSeconds += curves.seconds;
    const rows = candidates.map((c, k): MinibatchRow => {
      const epoch = bestEpochOf(curves, k, options.monitor, select.fixedEpochs);
      return {
        normalize,
        ...c,
        c: null,
        epoch,
        holdoutLoss: curves.loss[epoch - 1]![k]!,
        holdoutAcc: curves.acc[epoch - 1]![k]!,
        calibratedLoss: null,
      };
    });
    table.push(...rows);
    const finalist = rows.reduce((best, row) => (better(row, best) ? row : best));
    const k = rows.indexOf(finalist);
    // The wide pass kept every epoch's held-out logits: the finalist's are sliced out, no refit needed.
    const kept = folds.every((f) => f.curves.heldLogits?.[finalist.epoch - 1]);
    const fit = kept
      ? temperatureOn(
          plan.folds.map((fold, f) =>
            sliceCandidate(
              folds[f]!.curves.heldLogits![finalist.epoch - 1]!,
              fold.held.length,
              k,
              candidates.length,
              classes,
            ),
          ),
          plan.folds.map((fold) => Int32Array.from(fold.held, (r) => train.labels[r]!)),
          classes,
        )
      : await heldOutTemperature(
          tf,
          train,
          plan.folds,
          dim,
          classes,
          { ...options, lr: finalist.lr, weightDecay: finalist.weightDecay, epochs: finalist.epoch },
          normalize,
          select.engine ?? 'tfjs',
        );
    finalist.calibratedLoss = fit.after;
    calibrated.push({ row: finalist, ...fit });
  }
  const winner = calibrated.reduce((best, c) =>
    (options.monitor === 'val_acc' ? better(c.row, best.row) : c.after < best.after) ? c : best,
  );
  const { row: chosen, temperature, before, after } = winner;
  return {
    method: plan.method,
    folds: plan.folds.length,
    heldRows: plan.folds.reduce((s, f) => s + f.held.length, 0),
    table,
    chosen,
    temperature,
    heldNll: { before, after },
    seconds: (performance.now() - started) / 1000,
    gflops: flops / 1e9,
    gflopsPerSecond: flops / 1e9 / sweepSeconds,
  };
}

/** Refits the chosen setting on each fold's fit rows and fits one temperature on all held-out logits together. */
async function heldOutTemperature(
  tf: Tf,
  train: Split,
  folds: Fold[],
  dim: number,
  classes: number,
  options: HeadOptions,
  normalize: NormalizationKind,
  engine: 'tfjs' | 'onnxruntime',
) {
  const logits: Float32Array[] = [];
  const labels: Int32Array[] = [];
  for (const fold of folds) {
    const { fit, held } = normalisedFold(train, fold, dim, normalize);
    if (engine === 'onnxruntime' && options.hidden === 0) {
      logits.push(await ortHeldOutLogits(fit, held, dim, classes, options));
    } else {
      const result = fitHead(tf, fit, null, dim, classes, options, { selectOnVal: false });
      logits.push(predictLogits(tf, result.layers, held.features, held.count));
    }
    labels.push(held.labels);
  }
  return temperatureOn(logits, labels, classes);
}

/** Candidate k's logits [rows, classes] out of a wide [rows, K·classes] block. */
function sliceCandidate(
  wide: Float32Array,
  rows: number,
  k: number,
  candidates: number,
  classes: number,
): Float32Array {
  const out = new Float32Array(rows * classes);
  for (let r = 0; r < rows; r++)
    out.set(wide.subarray((r * candidates + k) * classes, (r * candidates + k + 1) * classes), r * classes);
  return out;
}

/** One temperature for all folds' held-out logits together. */
function temperatureOn(logits: Float32Array[], labels: Int32Array[], classes: number) {
  const allLogits = concat(logits, Float32Array);
  const allLabels = concat(labels, Int32Array);
  const temperature = fitTemperature(allLogits, allLabels, classes, TEMPERATURE_PRIOR);
  const nll = (t: number) => temperatureNllOf(allLogits, allLabels, classes, t);
  return { temperature, before: nll(1), after: nll(temperature) };
}

export function concat<T extends Float32Array | Int32Array>(parts: T[], ctor: { new (n: number): T }): T {
  const out = new ctor(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
