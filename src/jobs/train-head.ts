/**
 * The train-head job: store → head. Reads cached features, chooses the head's hyperparameters on a hold-out of
 * train (unless told not to), trains, calibrates, evaluates on val and saves a TF.js LayersModel with provenance.
 */
import * as path from 'node:path';
import { stratifiedSplit } from '../dataset/split.js';
import { FeatcacheError, invalidParameter, optionName } from '../errors.js';
import { curvesPage } from '../head/curves.js';
import { type CalibrationReport, type Metrics, calibrationReport, classificationMetrics } from '../head/metrics.js';
import { NORMALIZATIONS, type NormalizationKind, applyNormalization, fitNormalization } from '../head/normalize.js';
import { BACKENDS, type BackendChoice, loadTf } from '../head/runtime.js';
import { type HeadInfo, inspectHeadDir, saveHead } from '../head/saved.js';
import { DEFAULT_SWEEP_GRID, MIN_SWEEP_STEPS, type Selection, type SweepGrid, selectSetting } from '../head/select.js';
import { SWEEP_ENGINES, type SweepEngine } from '../head/sweep.js';
import { DEFAULT_HEAD_OPTIONS, type EpochStats, type HeadOptions, type Split, fitHead, predictLogits, softmaxRows, validateHeadOptions } from '../head/train.js';
import { type FeatureSet, FeatureCache } from '../store/reader.js';
import { withDefaults } from '../util/options.js';
import { toolVersions } from '../version.js';

export interface TrainHeadOptions extends HeadOptions {
  cache: string;
  /** Directory to write the head to: new, empty, or holding a head featcache wrote. */
  head: string;
  trainSplit: string;
  valSplit: string;
  /** Validate on this stratified fraction of train instead of the cached val split (null: use the val split). */
  valFraction: number | null;
  normalize: NormalizationKind;
  backend: BackendChoice;
  /** Choose lr, weight decay, normalisation and epochs on a hold-out of train (options given explicitly stay fixed). */
  sweep: boolean;
  /** Share of train held out for the sweep's selection and the temperature. */
  holdoutFraction: number;
  /** The sweep's longest run when `epochs` is not given; the epoch count is then chosen on the hold-out. */
  sweepEpochs: number;
  /** The sweep stops when no candidate improved its held-out loss for this many epochs. */
  sweepPatience: number;
  /** The sweep gives each candidate at least this many optimiser steps (tiny sets: more epochs, see MIN_SWEEP_STEPS). */
  sweepMinSteps: number;
  grid: SweepGrid;
  /** Engine of the sweep's wide pass: auto = tfjs on tfjs-node, else onnxruntime (MLAS kernels on all cores). */
  sweepEngine: SweepEngine;
  log?: ((line: string) => void) | undefined;
}

/** Every default of the job, declared once: the CLI shows these in --help. */
export const DEFAULT_TRAIN_HEAD_OPTIONS: Readonly<Omit<TrainHeadOptions, 'log'>> = Object.freeze({
  ...DEFAULT_HEAD_OPTIONS,
  cache: './features',
  head: 'models/head',
  trainSplit: 'train',
  valSplit: 'val',
  valFraction: null,
  normalize: 'none',
  backend: 'auto',
  sweep: true,
  holdoutFraction: 0.2,
  sweepEpochs: 100,
  sweepPatience: 10,
  sweepMinSteps: MIN_SWEEP_STEPS,
  grid: DEFAULT_SWEEP_GRID,
  sweepEngine: 'auto',
});

/** The options the sweep would otherwise choose; each one given explicitly is held fixed. */
export const SWEPT_OPTIONS = Object.freeze(['lr', 'weightDecay', 'normalize', 'epochs'] as const);

export interface SweepSummary extends Omit<Selection, 'table' | 'chosen'> {
  engine: 'tfjs' | 'onnxruntime';
  candidates: Selection['table'];
  chosen: Selection['chosen'];
  /** Options the user gave, held fixed. */
  fixed: string[];
}

export interface TrainHeadResult {
  head: string;
  backend: string;
  backendSkipped: string[];
  classes: string[];
  trainRows: number;
  valRows: number;
  validation: 'split' | 'fraction' | 'none';
  /** The setting trained (chosen by the sweep or given). */
  setting: { normalize: NormalizationKind; lr: number; weightDecay: number; epochs: number };
  /** null with --no-sweep, or when nothing could be held out (`sweepSkipped` says why). */
  sweep: SweepSummary | null;
  sweepSkipped: string | null;
  temperature: number;
  bestEpoch: number;
  stoppedEarly: boolean;
  secondsPerEpoch: number;
  history: EpochStats[];
  /** On val (or train without validation), with calibrated probabilities. */
  metrics: Metrics;
  calibration: CalibrationReport;
}

type Labelled = Split & { paths: string[] };

function labelled(set: FeatureSet): Labelled {
  return subset(set, [...set.labels.keys()].filter((i) => set.labels[i]! >= 0), set.dim);
}

function subset(split: Labelled, rows: number[], dim: number): Labelled {
  const features = new Float32Array(rows.length * dim);
  rows.forEach((row, k) => features.set(split.features.subarray(row * dim, (row + 1) * dim), k * dim));
  return { features, labels: Int32Array.from(rows, (r) => split.labels[r]!), count: rows.length, paths: rows.map((r) => split.paths[r]!) };
}

function copy(split: Labelled): Labelled {
  return { ...split, features: split.features.slice() };
}

async function loadSplits(cache: FeatureCache, options: TrainHeadOptions) {
  const all = labelled(await cache.read(options.trainSplit));
  if (all.count === 0) throw new FeatcacheError(`${optionName('cache')} ${options.cache}: split ${options.trainSplit} has no labelled rows; extract a labelled dataset`);
  const dim = cache.dim;
  if (options.valFraction !== null) {
    const rows = [...Array(all.count).keys()];
    const { train, val } = stratifiedSplit(rows, (r) => String(all.labels[r]), (r) => all.paths[r]!, options.valFraction, options.seed);
    return { train: subset(all, train, dim), val: subset(all, val, dim), validation: 'fraction' as const };
  }
  if ((await cache.splits()).includes(options.valSplit) && options.valSplit !== options.trainSplit) {
    const val = labelled(await cache.read(options.valSplit));
    if (val.count > 0) return { train: all, val, validation: 'split' as const };
  }
  return { train: all, val: null, validation: 'none' as const };
}

/** Merges over the defaults and checks every value: numbers finite and in range, choices known. */
export function resolveTrainHeadOptions(options: Partial<TrainHeadOptions>): { resolved: TrainHeadOptions; given: Set<string> } {
  const given = new Set(Object.entries(options).filter(([, v]) => v !== undefined).map(([k]) => k));
  const resolved: TrainHeadOptions = withDefaults(DEFAULT_TRAIN_HEAD_OPTIONS, options) as TrainHeadOptions;
  const name = String;
  validateHeadOptions(resolved);
  const fraction = (key: 'valFraction' | 'holdoutFraction') => {
    const v = resolved[key];
    if (v === null && key === 'valFraction') return;
    if (typeof v !== 'number' || !(v > 0 && v < 1)) throw invalidParameter(name(key), 'a number between 0 and 1', v);
  };
  fraction('valFraction');
  fraction('holdoutFraction');
  for (const key of ['sweepEpochs', 'sweepPatience', 'sweepMinSteps'] as const) {
    const v = resolved[key];
    if (!Number.isInteger(v) || v < (key === 'sweepEpochs' ? 1 : 0)) throw invalidParameter(name(key), key === 'sweepEpochs' ? 'a positive integer' : 'an integer >= 0', v);
  }
  if (!NORMALIZATIONS.includes(resolved.normalize)) throw invalidParameter(name('normalize'), `one of ${NORMALIZATIONS.join(', ')}`, resolved.normalize);
  if (!SWEEP_ENGINES.includes(resolved.sweepEngine)) throw invalidParameter(name('sweepEngine'), `one of ${SWEEP_ENGINES.join(', ')}`, resolved.sweepEngine);
  if (!BACKENDS.includes(resolved.backend)) throw invalidParameter(name('backend'), `one of ${BACKENDS.join(', ')}`, resolved.backend);
  for (const [key, ok] of [['lr', (v: number) => v > 0], ['weightDecay', (v: number) => v >= 0]] as const) {
    const values = resolved.grid[key];
    if (!Array.isArray(values) || values.length === 0 || !values.every((v) => Number.isFinite(v) && ok(v))) throw invalidParameter(`${name('grid')}.${key}`, 'a non-empty list of valid numbers', values);
  }
  return { resolved, given };
}

/** The grid with each option the user gave pinned to its value. */
function pinnedGrid(o: TrainHeadOptions, given: Set<string>): SweepGrid {
  return {
    lr: given.has('lr') ? [o.lr] : o.grid.lr,
    weightDecay: given.has('weightDecay') ? [o.weightDecay] : o.grid.weightDecay,
    normalize: given.has('normalize') ? [o.normalize] : o.grid.normalize,
  };
}

/**
 * Trains a head on cached features and saves it.
 *
 * By default it sweeps learning rate × weight decay × normalisation (all candidates in one wide pass per
 * normalisation), chooses the setting and the epoch count on a stratified hold-out of train (k-fold when that is
 * too small), refits on all of train, fits a temperature on the held-out predictions, and reports top-1, ECE and
 * NLL on the val split, which selects nothing. Options given explicitly are held fixed; `sweep: false` trains the
 * given (or default) setting once, restoring the best val epoch as before.
 *
 * @example
 * ```ts
 * import { trainHead } from 'featcache';
 * const r = await trainHead({ cache: 'features', head: 'models/head', log: console.error });
 * console.log(r.setting, r.metrics.top1, r.calibration.after.ece);
 * ```
 */
export async function trainHead(options: Partial<TrainHeadOptions> = {}): Promise<TrainHeadResult> {
  const { resolved: o, given } = resolveTrainHeadOptions(options);
  const log = o.log ?? (() => {});
  // Refuse a directory we may not write into before spending time on training.
  await inspectHeadDir(o.head);
  const cache = await FeatureCache.open(o.cache);
  const { train, val, validation } = await loadSplits(cache, o);
  const classes = cache.manifest.classes;
  const dim = cache.dim;
  if (validation === 'none') log(`train-head: no "${o.valSplit}" split in ${o.cache} and no valFraction: training without validation (metrics are on train)`);
  const runtime = await loadTf(o.backend);
  log(`train-head: TensorFlow.js backend ${runtime.backend}${runtime.skipped.length > 0 ? ` (not ${runtime.skipped.join('; not ')})` : ''}`);

  let setting = { normalize: o.normalize, lr: o.lr, weightDecay: o.weightDecay, epochs: o.epochs };
  let sweep: SweepSummary | null = null;
  let sweepSkipped: string | null = o.sweep ? null : 'not asked (sweep: false)';
  if (o.sweep) {
    const fixed = SWEPT_OPTIONS.filter((k) => given.has(k));
    const engine = o.sweepEngine === 'auto' ? (runtime.backend === 'tensorflow' ? 'tfjs' : 'onnxruntime') : o.sweepEngine;
    const selection = await selectSetting(runtime.tf, train, dim, classes.length, { ...o, epochs: given.has('epochs') ? o.epochs : o.sweepEpochs }, {
      grid: pinnedGrid(o, given), fixedEpochs: given.has('epochs') ? o.epochs : undefined, holdoutFraction: o.holdoutFraction, patience: o.sweepPatience,
      keys: train.paths, classNames: classes, log, engine, minSteps: o.sweepMinSteps,
    });
    if (typeof selection === 'string') {
      sweepSkipped = selection;
      log(`train-head: no sweep: ${selection}; training the ${given.size > 0 ? 'given' : 'default'} setting once`);
    } else {
      const { table, chosen, ...rest } = selection;
      sweep = { ...rest, engine, candidates: table, chosen, fixed: fixed.map((k) => optionName(k)) };
      setting = { normalize: chosen.normalize, lr: chosen.lr, weightDecay: chosen.weightDecay, epochs: chosen.epoch };
      log(sweepLine(sweep));
    }
  }
  const temperature = sweep?.temperature ?? 1;

  const trainRows = copy(train);
  const valRows = val ? copy(val) : null;
  const normalization = fitNormalization(setting.normalize, trainRows.features, trainRows.count, dim);
  applyNormalization(normalization, trainRows.features, trainRows.count, dim);
  if (valRows) applyNormalization(normalization, valRows.features, valRows.count, dim);
  const headOptions: HeadOptions = { ...o, lr: setting.lr, weightDecay: setting.weightDecay, epochs: setting.epochs };
  const result = fitHead(runtime.tf, trainRows, valRows, dim, classes.length, headOptions, {
    // After a sweep the epoch count is already chosen on the hold-out: val only reports.
    selectOnVal: sweep === null,
    onEpoch: (s) => log(epochLine(s, headOptions.epochs)),
  });
  const evaluated = valRows ?? trainRows;
  const logits = predictLogits(runtime.tf, result.layers, evaluated.features, evaluated.count);
  const metrics = classificationMetrics(softmaxRows(logits, classes.length, temperature), evaluated.labels, classes);
  const calibration = calibrationReport(logits, evaluated.labels, classes.length, temperature, softmaxRows);
  const m = cache.manifest;
  const evaluatedOn = validation === 'none' ? 'train' : 'val';
  const info: HeadInfo = {
    format: 1,
    classes,
    normalization,
    provenance: {
      modelSha256: m.modelSha256, modelFile: m.modelFile, tappedTensor: m.tappedTensor, preset: m.preset, exif: m.exif, icc: m.icc, precision: m.precision ?? 'fp32',
      ...(m.precision === 'int8' ? { calibrationHash: m.calibrationHash, int8Model: m.int8Model } : {}), dim: m.dim,
      cache: path.resolve(o.cache), trainedAt: new Date().toISOString(), backend: runtime.backend, backendSkipped: runtime.skipped, versions: toolVersions(),
    },
    options: {
      ...pickHeadOptions(headOptions), normalize: setting.normalize, trainSplit: o.trainSplit, valSplit: validation === 'split' ? o.valSplit : null, valFraction: o.valFraction,
      sweep: sweep ? { method: sweep.method, folds: sweep.folds, holdoutFraction: o.holdoutFraction, fixed: sweep.fixed, candidates: sweep.candidates.length } : null,
    },
    bestEpoch: result.bestEpoch,
    summary: {
      top1: metrics.top1, top5: metrics.top5, ece: calibration.after.ece, nll: calibration.after.nll, evaluatedOn, trainRows: train.count, valRows: val?.count ?? 0,
    },
    ...(sweep ? { temperature } : {}),
  };
  const summary = `${train.count} train / ${val?.count ?? 0} val rows, ${classes.length} classes, ${settingText(setting)}, ` +
    `${evaluatedOn} top-1 ${metrics.top1.toFixed(4)}, ECE ${calibration.after.ece.toFixed(3)} (T = ${temperature.toFixed(3)}), backend ${runtime.backend}`;
  const metricsJson = { ...metrics, evaluatedOn, calibration, sweep, sweepSkipped };
  await saveHead(runtime.tf, o.head, {
    info,
    layers: result.layers,
    extras: {
      'history.json': `${JSON.stringify(result.history, null, 2)}\n`,
      'metrics.json': `${JSON.stringify(metricsJson, null, 2)}\n`,
      'curves.html': curvesPage(result.history, validation === 'none' ? null : metrics, summary, validation === 'none' || sweep ? null : result.bestEpoch, { calibration, sweep: sweep?.candidates ?? null, chosen: sweep?.chosen ?? null }),
    },
  });
  return {
    head: o.head, backend: runtime.backend, backendSkipped: runtime.skipped, classes, trainRows: train.count, valRows: val?.count ?? 0, validation, setting, sweep, sweepSkipped,
    temperature, bestEpoch: result.bestEpoch, stoppedEarly: result.stoppedEarly, secondsPerEpoch: result.secondsPerEpoch, history: result.history, metrics, calibration,
  };
}

function pickHeadOptions(o: HeadOptions): HeadOptions {
  const keys = Object.keys(DEFAULT_HEAD_OPTIONS) as (keyof HeadOptions)[];
  return Object.fromEntries(keys.map((k) => [k, o[k]])) as unknown as HeadOptions;
}

function settingText(s: TrainHeadResult['setting']): string {
  return `normalize ${s.normalize}, lr ${s.lr}, weight decay ${s.weightDecay}, ${s.epochs} epochs`;
}

/** The chosen setting in one line. */
export function sweepLine(s: SweepSummary): string {
  const c = s.chosen;
  return `train-head: sweep chose normalize ${c.normalize}, lr ${c.lr}, weight decay ${c.weightDecay}, ${c.epoch} epochs ` +
    `(held-out acc ${c.holdoutAcc.toFixed(4)}, loss ${c.holdoutLoss.toFixed(4)}; ${s.candidates.length} candidates, ${s.method === 'kfold' ? `${s.folds}-fold` : `hold-out of ${s.heldRows} rows`}, ` +
    `temperature ${s.temperature.toFixed(3)}; ${s.seconds.toFixed(1)} s, ${s.gflopsPerSecond.toFixed(1)} GFLOP/s)` + (s.fixed.length > 0 ? `; fixed: ${s.fixed.join(', ')}` : '');
}

export function epochLine(s: EpochStats, epochs: number): string {
  return `epoch ${String(s.epoch).padStart(3)}/${epochs} lr ${s.lr.toPrecision(3)}  loss ${s.trainLoss.toFixed(4)} acc ${s.trainAcc.toFixed(4)}` +
    (s.valLoss === null ? '' : `  | val loss ${s.valLoss.toFixed(4)} acc ${s.valAcc!.toFixed(4)}`) + `  (${s.seconds.toFixed(2)} s)`;
}

export function trainSummaryLine(r: TrainHeadResult): string {
  const m = r.metrics;
  const on = r.validation === 'none' ? 'train' : 'val';
  const c = r.calibration;
  return `train-head: ${r.trainRows} train / ${r.valRows} val rows, ${settingText(r.setting)}${r.stoppedEarly ? ' (stopped early)' : ''}; ` +
    `${on} top-1 ${m.top1.toFixed(4)}${m.top5 === null ? '' : `, top-5 ${m.top5.toFixed(4)}`}, ECE ${c.before.ece.toFixed(3)} → ${c.after.ece.toFixed(3)}, NLL ${c.before.nll.toFixed(3)} → ${c.after.nll.toFixed(3)} (T = ${r.temperature.toFixed(3)}); ` +
    `${r.secondsPerEpoch.toFixed(3)} s/epoch on ${r.backend} → ${r.head} (curves: ${path.join(r.head, 'curves.html')})`;
}
