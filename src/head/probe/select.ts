/**
 * Choosing the probe's C and normalisation on data the reported metric never sees (the hold-out or k folds of
 * train that `planSelection` draws), then fitting the chosen probe on all of train.
 *
 * Every candidate is scored by its held-out NLL after its own temperature (how well its logits rank, since the
 * saved head is calibrated the same way). Small sets cannot tell close candidates apart: on 30 held-out rows the
 * candidates' calibrated NLLs differ by less than their standard error. So ties are judged as in the
 * one-standard-error rule of Hastie, Tibshirani & Friedman (ESL §7.10): every candidate within one paired standard
 * error of the best is a tie. Unlike that rule, a tie is not broken toward the strongest regularisation: it goes
 * to the normalisation preferred a priori (`NORMALIZATION_PREFERENCE`), then to the lower calibrated NLL. After
 * temperature scaling a weakly regularised probe is not penalised for being over-confident, and on few-shot
 * features the strongest tied C was the less accurate one (monkeys, 3 per class: l2 C 10 / 100 / 1000 tie; on
 * 272 val images C 10 is 2 images worse).
 */
import { FeatcacheError } from '../../errors.js';
import { MatMul } from './linalg.js';
import { fitTemperature, rowNlls, temperatureNll } from '../metrics.js';
import { type NormalizationKind, type Normalization, applyNormalization, fitNormalization } from '../normalize.js';
import { type ProbeRows, fitProbes, l2Strength, probeLayer, probeLogits } from './probe.js';
import {
  type Fold,
  type SweepRow,
  TEMPERATURE_PRIOR,
  concat,
  duplicateGroups,
  normalisedFold,
  planSelection,
  subsetRows,
} from '../plan.js';
import { type DenseWeights, type HeadOptions, type Split, classWeightsFor } from '../model.js';

/**
 * Ties go to l2 first: it makes the head independent of the feature vector's length, which shifts with image
 * size, exposure and crop between training and use, and it is the usual choice for few-shot probes (Tian et al.,
 * "Rethinking few-shot image classification", 2020). Then the features as they are; per-dimension standardisation
 * last, as the most statistics estimated from the least data.
 */
export const NORMALIZATION_PREFERENCE: readonly NormalizationKind[] = Object.freeze(['l2', 'none', 'standard']);

/** scikit-learn's convergence test (`tol=1e-4` on the gradient of the summed loss), here on the mean loss. */
export const GRADIENT_TOLERANCE = 1e-4;
export const MAX_ITERATIONS = 1000;

export interface ProbeGrid {
  c: readonly number[];
  normalize: readonly NormalizationKind[];
}

export interface ProbeSelectOptions {
  grid: ProbeGrid;
  holdoutFraction: number;
  seed: number;
  classWeight: HeadOptions['classWeight'];
  monitor: HeadOptions['monitor'];
  keys: string[];
  classNames: string[];
  log: (line: string) => void;
}

export interface ProbeSelection {
  method: 'holdout' | 'kfold';
  folds: number;
  heldRows: number;
  table: SweepRow[];
  chosen: SweepRow;
  temperature: number;
  heldNll: { before: number; after: number };
  /** Normalisations left out of the grid, with the reason. */
  skipped: string[];
  seconds: number;
  gflops: number;
  gflopsPerSecond: number;
}

const probeRows = (s: Split, dim: number): ProbeRows => ({ features: s.features, count: s.count, dim });

function rowWeights(options: Pick<HeadOptions, 'classWeight'>, labels: Int32Array, classes: number): Float64Array {
  const byClass = classWeightsFor(options, labels, classes);
  return Float64Array.from(labels, (l) => byClass[l]!);
}

function accuracy(logits: Float32Array, labels: Int32Array, classes: number): number {
  let right = 0;
  labels.forEach((y, r) => {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[r * classes + c]! > logits[r * classes + best]!) best = c;
    if (best === y) right++;
  });
  return labels.length > 0 ? right / labels.length : 0;
}

const mean = (v: Float64Array) => v.reduce((a, b) => a + b, 0) / Math.max(1, v.length);

/** Mean of a − b and its standard error, row by row (the candidates are scored on the same held-out rows). */
export function pairedDifference(a: Float64Array, b: Float64Array): { mean: number; se: number } {
  const d = a.map((v, i) => v - b[i]!);
  const m = mean(d);
  const variance = d.length > 1 ? d.reduce((s, v) => s + (v - m) ** 2, 0) / (d.length - 1) : 0;
  return { mean: m, se: Math.sqrt(variance / Math.max(1, d.length)) };
}

interface Scored {
  row: SweepRow;
  perRow: Float64Array;
  temperature: number;
  before: number;
}

/** One normalisation's candidates on every fold: pooled held-out logits per C, scored. */
async function scoreNormalization(
  train: Split,
  folds: Fold[],
  dim: number,
  classes: number,
  kind: NormalizationKind,
  o: ProbeSelectOptions,
  mm: MatMul,
): Promise<Scored[]> {
  const logits: Float32Array[][] = o.grid.c.map(() => []);
  const iterations = new Int32Array(o.grid.c.length);
  for (const fold of folds) {
    const { fit, held } = normalisedFold(train, fold, dim, kind);
    const fits = await fitProbes(
      probeRows(fit, dim),
      { labels: fit.labels, classes, rowWeights: rowWeights(o, fit.labels, classes) },
      o.grid.c,
      mm,
      { gradientTolerance: GRADIENT_TOLERANCE / fit.count, maxIterations: MAX_ITERATIONS },
    );
    fits.runs.forEach((r, i) => (iterations[i] = Math.max(iterations[i]!, r.iterations)));
    (await probeLogits(fits, probeRows(held, dim), mm)).forEach((l, i) => logits[i]!.push(l));
  }
  const labels = Int32Array.from(folds.flatMap((f) => f.held.map((r) => train.labels[r]!)));
  return o.grid.c.map((c, i) => {
    const pooled = concat(logits[i]!, Float32Array);
    const temperature = fitTemperature(pooled, labels, classes, TEMPERATURE_PRIOR);
    const perRow = rowNlls(pooled, labels, classes, temperature);
    const row: SweepRow = {
      normalize: kind,
      c,
      lr: null,
      weightDecay: l2Strength(c, train.count, classes),
      epoch: null,
      iterations: iterations[i]!,
      holdoutLoss: temperatureNll(pooled, labels, classes, 1),
      holdoutAcc: accuracy(pooled, labels, classes),
      calibratedLoss: mean(perRow),
      tied: false,
    };
    return { row, perRow, temperature, before: row.holdoutLoss };
  });
}

/** The one-standard-error rule over calibrated NLL, ties broken by the normalisation preference (see above). */
export function chooseCandidate<T extends { row: SweepRow; perRow: Float64Array }>(
  scored: T[],
  monitor: HeadOptions['monitor'],
): T {
  const best = scored.reduce((a, b) => (b.row.calibratedLoss! < a.row.calibratedLoss! ? b : a));
  for (const s of scored) {
    const d = pairedDifference(s.perRow, best.perRow);
    s.row.tied = d.mean <= d.se;
  }
  const rank = (s: T) => NORMALIZATION_PREFERENCE.indexOf(s.row.normalize);
  return scored
    .filter((s) => s.row.tied)
    .sort(
      (a, b) =>
        (monitor === 'val_acc' ? b.row.holdoutAcc - a.row.holdoutAcc : 0) ||
        rank(a) - rank(b) ||
        a.row.calibratedLoss! - b.row.calibratedLoss! ||
        a.row.c! - b.row.c!,
    )[0]!;
}

/**
 * Standardisation estimates a mean and a spread per dimension; from fewer rows than dimensions those estimates are
 * mostly noise (a dimension that happens to vary little on 24 rows is blown up on every new image).
 */
function usableNormalizations(
  grid: ProbeGrid,
  fitRows: number,
  dim: number,
): { kinds: NormalizationKind[]; skipped: string[] } {
  const skipped: string[] = [];
  const kinds = grid.normalize.filter((k) => {
    if (k !== 'standard' || grid.normalize.length === 1 || fitRows >= dim) return true;
    skipped.push(
      `standard: ${fitRows} rows per fit are fewer than the ${dim} dimensions whose mean and spread it would estimate`,
    );
    return false;
  });
  return { kinds, skipped };
}

/** Sweeps C × normalisation on the planned folds and picks one (see the module comment); a string says why not. */
export async function selectProbe(
  train: Split,
  dim: number,
  classes: number,
  o: ProbeSelectOptions,
  mm: MatMul,
): Promise<ProbeSelection | string> {
  if (o.grid.c.length === 0 || o.grid.normalize.length === 0)
    throw new FeatcacheError('train-head: the sweep grid is empty');
  const plan = planSelection(
    train.labels,
    o.keys,
    o.classNames,
    o.holdoutFraction,
    o.seed,
    duplicateGroups(train, dim),
  );
  if (typeof plan === 'string') return plan;
  for (const note of plan.notes) o.log(`train-head: ${note}`);
  const started = performance.now();
  const macs = mm.macs;
  const { kinds, skipped } = usableNormalizations(o.grid, Math.min(...plan.folds.map((f) => f.fit.length)), dim);
  for (const s of skipped) o.log(`train-head: not sweeping ${s}`);
  const scored: Scored[] = [];
  for (const kind of kinds) scored.push(...(await scoreNormalization(train, plan.folds, dim, classes, kind, o, mm)));
  const chosen = chooseCandidate(scored, o.monitor);
  const seconds = (performance.now() - started) / 1000;
  const gflops = (2 * (mm.macs - macs)) / 1e9;
  return {
    method: plan.method,
    folds: plan.folds.length,
    heldRows: plan.folds.reduce((s, f) => s + f.held.length, 0),
    table: scored.map((s) => s.row),
    chosen: chosen.row,
    temperature: chosen.temperature,
    heldNll: { before: chosen.before, after: chosen.row.calibratedLoss! },
    skipped,
    seconds,
    gflops,
    gflopsPerSecond: gflops / seconds,
  };
}

export interface ProbeHead {
  layers: DenseWeights[];
  normalization: Normalization;
  iterations: number;
  stopped: string;
  seconds: number;
}

/** The probe with C `c` fitted on all of `train` under `kind`: the saved head's one dense layer. */
export async function fitProbeHead(
  train: Split,
  dim: number,
  classes: number,
  kind: NormalizationKind,
  c: number,
  classWeight: HeadOptions['classWeight'],
  mm: MatMul,
): Promise<ProbeHead> {
  const started = performance.now();
  const all = subsetRows(train, [...Array(train.count).keys()], dim);
  const normalization = fitNormalization(kind, all.features, all.count, dim);
  applyNormalization(normalization, all.features, all.count, dim);
  const fits = await fitProbes(
    probeRows(all, dim),
    { labels: all.labels, classes, rowWeights: rowWeights({ classWeight }, all.labels, classes) },
    [c],
    mm,
    { gradientTolerance: GRADIENT_TOLERANCE / train.count, maxIterations: MAX_ITERATIONS },
  );
  const { kernel, bias } = await probeLayer(fits, 0, mm);
  const run = fits.runs[0]!;
  return {
    layers: [{ kernel, shape: [dim, classes], bias, activation: 'softmax' }],
    normalization,
    iterations: run.iterations,
    stopped: run.stopped,
    seconds: (performance.now() - started) / 1000,
  };
}

/** Folds of the out-of-fold temperature: each fold model sees 90 % of train, nearer the refit than 5-fold's 80 %. */
export const OUT_OF_FOLD_K = 10;

export interface OutOfFoldTemperature {
  /** The temperature to ship: `fitted`, or 1 where it does not beat 1 by more than one standard error. */
  temperature: number;
  fitted: number;
  /** Mean out-of-fold NLL gain of `fitted` over 1, and its paired standard error over the rows. */
  gain: { mean: number; se: number };
  folds: number;
  /** Rows predicted out of fold (classes with one distinct image are trained on, never held out). */
  rows: number;
  /** Pooled out-of-fold NLL before and after the temperature. */
  nll: { before: number; after: number };
  /** The L2 strength every fold model was fitted at: the refit's (see outOfFoldTemperature). */
  lambda: number;
  seconds: number;
}

/**
 * The temperature for the model that is shipped. The sweep's temperature belongs to its fold models; the refit on
 * all rows is fitted at C on n rows, so its λ = 1/(C·n) is smaller and it is more confident than they are, and that
 * temperature over-sharpens it (hymenoptera: val NLL 0.113 → 0.125 with it). Here k fold models are fitted at the
 * chosen normalisation with the refit's λ (C scaled by n / fit rows), each predicts the rows it never saw, and the
 * temperature is fitted on the pooled out-of-fold logits. Cost: k more fits at one C (the sweep fits
 * C-values × normalisations on its folds). The fold models are still fitted on (k−1)/k of the rows, a little less
 * confident than the refit, so a temperature that beats T = 1 out of fold by less than one paired standard error
 * (the sweep's rule, ESL §7.10) is not shipped: hymenoptera at C 100 fits T 0.75 for a gain of 0.005 nats, and on
 * val that T costs 0.001 nats where T = 1 costs nothing.
 */
export async function outOfFoldTemperature(
  train: Split,
  dim: number,
  classes: number,
  kind: NormalizationKind,
  c: number,
  o: Pick<ProbeSelectOptions, 'seed' | 'keys' | 'classNames' | 'classWeight'>,
  mm: MatMul,
  k = OUT_OF_FOLD_K,
): Promise<OutOfFoldTemperature | string> {
  const started = performance.now();
  const plan = planSelection(train.labels, o.keys, o.classNames, 0.2, o.seed, duplicateGroups(train, dim), k);
  if (typeof plan === 'string') return plan;
  const logits: Float32Array[] = [];
  for (const fold of plan.folds) {
    const { fit, held } = normalisedFold(train, fold, dim, kind);
    const fits = await fitProbes(
      probeRows(fit, dim),
      { labels: fit.labels, classes, rowWeights: rowWeights(o, fit.labels, classes) },
      [(c * train.count) / fit.count],
      mm,
      { gradientTolerance: GRADIENT_TOLERANCE / fit.count, maxIterations: MAX_ITERATIONS },
    );
    logits.push((await probeLogits(fits, probeRows(held, dim), mm))[0]!);
  }
  const labels = Int32Array.from(plan.folds.flatMap((f) => f.held.map((r) => train.labels[r]!)));
  const pooled = concat(logits, Float32Array);
  const fitted = fitTemperature(pooled, labels, classes, TEMPERATURE_PRIOR);
  const gain = pairedDifference(rowNlls(pooled, labels, classes, 1), rowNlls(pooled, labels, classes, fitted));
  const temperature = gain.mean > gain.se ? fitted : 1;
  return {
    temperature,
    fitted,
    gain,
    folds: plan.folds.length,
    rows: labels.length,
    nll: {
      before: temperatureNll(pooled, labels, classes, 1),
      after: temperatureNll(pooled, labels, classes, temperature),
    },
    lambda: l2Strength(c, train.count, classes),
    seconds: (performance.now() - started) / 1000,
  };
}
