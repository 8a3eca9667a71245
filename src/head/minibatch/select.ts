/**
 * Choosing the head's hyperparameters on data the reported metric never sees: a stratified, seeded hold-out of the
 * train split (or stratified k-fold when a hold-out would be too small), never the val split. The chosen setting
 * is then refit on all of train, and a temperature is fitted on the held-out predictions.
 */
import { FeatcacheError } from '../../errors.js';
import { fitTemperature, temperatureNll as temperatureNllOf } from '../metrics.js';
import type { HeadOptions, Split } from '../model.js';
import type { NormalizationKind } from '../normalize.js';
import {
  type Fold,
  type SweepGrid,
  type SweepRow,
  TEMPERATURE_PRIOR,
  concat,
  duplicateGroups,
  normalisedFold,
  planSelection,
} from '../plan.js';
import type { Tf } from '../runtime.js';
import { type Engine, MIN_SWEEP_STEPS } from './engine.js';
import { type LrWd, type SweepCurves, bestEpochOf, combineFolds, ortHeldOutLogits, sweepCurves } from './sweep.js';
import { fitHead, predictLogits } from './train.js';

export { MIN_SWEEP_STEPS };

/** Epochs that give at least `minSteps` optimiser steps on the smallest fold (at least `epochs`). */
export function sweepEpochBudget(epochs: number, fitRows: number, batchSize: number, minSteps: number): number {
  const stepsPerEpoch = Math.max(1, Math.ceil(fitRows / batchSize));
  return Math.max(epochs, Math.ceil(minSteps / stepsPerEpoch));
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
  engine?: Engine;
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
  engine: Engine,
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
