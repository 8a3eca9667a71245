/**
 * The train-head job: store → head. Reads cached features, chooses the head's hyperparameters on a hold-out of
 * train (unless told not to), trains, calibrates, evaluates on val and saves a TF.js LayersModel with provenance.
 */
import { cText, settingText } from './setting-text.js';
import { stratifiedSplit } from '../dataset/split.js';
import { ExitCode, FeatcacheError, invalidParameter, optionName } from '../errors.js';
import { curvesPage } from '../head/curves.js';
import { type CalibrationReport, type Metrics, calibrationReport, classificationMetrics } from '../head/metrics.js';
import {
  NORMALIZATIONS,
  type Normalization,
  type NormalizationKind,
  applyNormalization,
  fitNormalization,
} from '../head/normalize.js';
import { BACKENDS, type BackendChoice, type TfRuntime, loadTf } from '../head/runtime.js';
import { type HeadInfo, headProvenance, inspectHeadDir, saveHead } from '../head/saved.js';
import { MatMul } from '../head/probe/linalg.js';
import { type ProbeHead, fitProbeHead, outOfFoldTemperature, selectProbe } from '../head/probe/select.js';
import { cForStrength, l2Strength } from '../head/probe/probe.js';
import { type SweepGrid, type SweepRow, conflictingDuplicates, subsetRows } from '../head/plan.js';
import { type Selection, selectSetting } from '../head/minibatch/select.js';
import { fitHeadOrt } from '../head/minibatch/fit-ort.js';
import { SWEEP_ENGINES, type Engine, type SweepEngine, chooseEngine } from '../head/minibatch/engine.js';
import {
  DEFAULT_HEAD_OPTIONS,
  type EpochStats,
  type HeadOptions,
  type Split,
  softmaxRows,
  validateHeadOptions,
} from '../head/model.js';
import { type TrainResult, fitHead, predictLogits } from '../head/minibatch/train.js';
import { type FeatureSet, FeatureCache } from '../store/reader.js';
import { withDefaults } from '../util/options.js';
import { STREAM_EPOCHS, type ScaleInfo, chooseScale, trainHeadAtScale } from './train-head-scale.js';
import { DEFAULT_TRAIN_HEAD_OPTIONS, MINIBATCH_OPTIONS, SOLVERS, type Solver } from './defaults.js';

export { DEFAULT_TRAIN_HEAD_OPTIONS };

export { SOLVERS, type Solver, MINIBATCH_OPTIONS };

/** The probe's C without a sweep: scikit-learn's default. */
export const DEFAULT_C = 1;

export interface TrainHeadOptions extends HeadOptions {
  solver: Solver;
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
  /** Peak memory budget in MB: solver auto streams when the in-memory path would exceed it; streaming stays within it. */
  memory: number;
  log?: ((line: string) => void) | undefined;
  /** Progress of long stages (streaming: the scan and each epoch), for a progress bar. */
  progress?: ((stage: string, done: number, total: number) => void) | undefined;
  /** Aborting stops training before anything is written. */
  signal?: AbortSignal | undefined;
}

/** The options the sweep would otherwise choose; each one given explicitly is held fixed. */
export const SWEPT_OPTIONS = Object.freeze(['lr', 'weightDecay', 'normalize', 'epochs'] as const);

export interface SweepSummary extends Omit<Selection, 'table' | 'chosen'> {
  solver: 'lbfgs' | 'minibatch';
  /** What ran the products: onnxruntime for the probe and the mini-batch wide pass, or tfjs. */
  engine: 'tfjs' | 'onnxruntime';
  candidates: SweepRow[];
  chosen: SweepRow;
  /** Options the user gave, held fixed. */
  fixed: string[];
  /** Normalisations left out of the grid, with the reason. */
  skipped: string[];
}

export interface TrainHeadResult {
  head: string;
  backend: string;
  backendSkipped: string[];
  classes: string[];
  trainRows: number;
  valRows: number;
  validation: 'split' | 'fraction' | 'none';
  /** The setting trained (chosen by the sweep or given); lr and epochs are null for the probe, c for mini-batch. */
  setting: {
    solver: 'lbfgs' | 'minibatch' | 'stream';
    normalize: NormalizationKind;
    c: number | null;
    lr: number | null;
    weightDecay: number;
    epochs: number | null;
  };
  /** What trained the saved head: onnxruntime (the probe; mini-batch without tfjs-node) or tfjs. */
  engine: 'tfjs' | 'onnxruntime';
  /** The probe's final fit: L-BFGS iterations and why it stopped (null for mini-batch training). */
  probe: { iterations: number; stopped: string; seconds: number } | null;
  /** null with --no-sweep, or when nothing could be held out (`sweepSkipped` says why). */
  sweep: SweepSummary | null;
  sweepSkipped: string | null;
  temperature: number;
  /** How the temperature was fitted, when not by the sweep (the probe: out of fold for the refit). */
  temperatureFit?: TemperatureFit | null;
  /** Mini-batch training's restored epoch and time per epoch; null for the probe. */
  bestEpoch: number | null;
  stoppedEarly: boolean;
  secondsPerEpoch: number | null;
  history: EpochStats[];
  /** On val (or train without validation), with calibrated probabilities. */
  metrics: Metrics;
  calibration: CalibrationReport;
  /** Seconds per stage (load, fit, evaluate, save; streaming: index, scan, sweep, warmStart, epochs, temperature, evaluate, save). */
  stages?: Record<string, number>;
  /** The streaming path's plan and peak RSS (solver stream). */
  scale?: ScaleInfo;
}

type Labelled = Split & { paths: string[] };

function labelled(set: FeatureSet): Labelled {
  return subset(
    set,
    [...set.labels.keys()].filter((i) => set.labels[i]! >= 0),
    set.dim,
  );
}

function subset(split: Labelled, rows: number[], dim: number): Labelled {
  return { ...subsetRows(split, rows, dim), paths: rows.map((r) => split.paths[r]!) };
}

function copy(split: Labelled): Labelled {
  return { ...split, features: split.features.slice() };
}

/**
 * Features that are NaN or ±Infinity train a head of zeros or NaNs without any error: refused here, where features
 * are loaded, naming the rows. (Extract records such an image as a failure; these come from elsewhere.)
 */
function requireFinite(set: Labelled, options: TrainHeadOptions, split: string): Labelled {
  const bad: string[] = [];
  const dim = set.features.length / Math.max(1, set.count);
  for (let r = 0; r < set.count; r++) {
    const row = set.features.subarray(r * dim, (r + 1) * dim);
    if (!row.every(Number.isFinite)) bad.push(set.paths[r]!);
  }
  if (bad.length > 0)
    throw new FeatcacheError(
      `${optionName('cache')} ${options.cache}: split ${split} has non-finite features (NaN or ±Infinity) in ${bad.length} row${bad.length > 1 ? 's' : ''}: ${bad.slice(0, 5).join(', ')}${bad.length > 5 ? ', …' : ''}; extract those images again (extract records non-finite features as a failure) — nothing was trained`,
      ExitCode.failed,
    );
  return set;
}

/** A fit whose loss or weights went non-finite (a learning rate far too high): refused, naming the setting. */
function requireFiniteFit(
  result: { history: EpochStats[]; layers: { kernel: Float32Array; bias: Float32Array }[] },
  setting: TrainHeadResult['setting'],
): void {
  const lossBad = result.history.find(
    (h) => !Number.isFinite(h.trainLoss) || (h.valLoss !== null && !Number.isFinite(h.valLoss)),
  );
  const weightsBad = result.layers.some((l) => !l.kernel.every(Number.isFinite) || !l.bias.every(Number.isFinite));
  if (!lossBad && !weightsBad) return;
  const remedy =
    setting.lr !== null
      ? `lower ${optionName('lr')} (got ${setting.lr})${setting.weightDecay > 0 ? ` or ${optionName('weightDecay')} (got ${setting.weightDecay})` : ''}`
      : `raise ${optionName('weightDecay')} (got ${setting.weightDecay}) or normalise the features`;
  throw new FeatcacheError(
    `train-head: training diverged: ${lossBad ? `the loss became ${lossBad.trainLoss} at epoch ${lossBad.epoch + 1}` : 'the weights became non-finite'} with ${settingText(setting)}; ${remedy} — nothing was saved`,
    ExitCode.failed,
  );
}

async function loadSplits(cache: FeatureCache, options: TrainHeadOptions) {
  const all = requireFinite(labelled(await cache.read(options.trainSplit)), options, options.trainSplit);
  if (all.count === 0)
    throw new FeatcacheError(
      `${optionName('cache')} ${options.cache}: split ${options.trainSplit} has no labelled rows; extract a labelled dataset`,
    );
  const dim = cache.dim;
  if (options.valFraction !== null) {
    const rows = [...Array(all.count).keys()];
    const { train, val } = stratifiedSplit(
      rows,
      (r) => String(all.labels[r]),
      (r) => all.paths[r]!,
      options.valFraction,
      options.seed,
    );
    return { train: subset(all, train, dim), val: subset(all, val, dim), validation: 'fraction' as const };
  }
  if ((await cache.splits()).includes(options.valSplit) && options.valSplit !== options.trainSplit) {
    const val = requireFinite(labelled(await cache.read(options.valSplit)), options, options.valSplit);
    if (val.count > 0) return { train: all, val, validation: 'split' as const };
  }
  return { train: all, val: null, validation: 'none' as const };
}

/** What a user should know about the training data before trusting the head. */
function dataNotes(train: Labelled, val: Labelled | null, classes: string[], dim: number): string[] {
  const notes: string[] = [];
  const inTrain = new Set(train.labels);
  const unseen = [...new Set(val?.labels ?? [])].filter((c) => !inTrain.has(c)).map((c) => JSON.stringify(classes[c]));
  if (unseen.length > 0)
    notes.push(
      `class${unseen.length > 1 ? 'es' : ''} ${unseen.slice(0, 5).join(', ')}${unseen.length > 5 ? ` and ${unseen.length - 5} more` : ''} ha${unseen.length > 1 ? 've' : 's'} val images but no training images: the head cannot predict ${unseen.length > 1 ? 'them' : 'it'}`,
    );
  const conflicting = conflictingDuplicates(train, dim);
  if (conflicting > 0)
    notes.push(
      `${conflicting} training images have the same features as an image of another class (the same picture under two labels?)`,
    );
  return notes;
}

/** Merges over the defaults and checks every value: numbers finite and in range, choices known. */
export function resolveTrainHeadOptions(options: Partial<TrainHeadOptions>): {
  resolved: TrainHeadOptions;
  given: Set<string>;
} {
  const given = new Set(
    Object.entries(options)
      .filter(([, v]) => v !== undefined)
      .map(([k]) => k),
  );
  const resolved: TrainHeadOptions = withDefaults(DEFAULT_TRAIN_HEAD_OPTIONS, options);
  const name = String;
  validateHeadOptions(resolved);
  const fraction = (key: 'valFraction' | 'holdoutFraction') => {
    const v = resolved[key];
    if (v === null && key === 'valFraction') return;
    if (typeof v !== 'number' || !(v > 0 && v < 1)) throw invalidParameter(name(key), 'a number between 0 and 1', v);
  };
  fraction('valFraction');
  if (!(Number.isFinite(resolved.memory) && resolved.memory >= 64))
    throw invalidParameter(name('memory'), 'a memory budget in MB, at least 64', resolved.memory);
  fraction('holdoutFraction');
  for (const key of ['sweepEpochs', 'sweepPatience', 'sweepMinSteps'] as const) {
    const v = resolved[key];
    if (!Number.isInteger(v) || v < (key === 'sweepEpochs' ? 1 : 0))
      throw invalidParameter(name(key), key === 'sweepEpochs' ? 'a positive integer' : 'an integer >= 0', v);
  }
  if (!NORMALIZATIONS.includes(resolved.normalize))
    throw invalidParameter(name('normalize'), `one of ${NORMALIZATIONS.join(', ')}`, resolved.normalize);
  if (!SOLVERS.includes(resolved.solver))
    throw invalidParameter(name('solver'), `one of ${SOLVERS.join(', ')}`, resolved.solver);
  if (resolved.solver === 'lbfgs' && resolved.hidden > 0)
    throw invalidParameter(
      name('solver'),
      `minibatch or auto with a hidden layer (${optionName('hidden')} ${resolved.hidden}): L-BFGS fits a linear head`,
      'lbfgs',
    );
  const minibatchOnly = MINIBATCH_OPTIONS.filter((k) => given.has(k));
  if (resolved.solver === 'lbfgs' && minibatchOnly.length > 0) {
    throw invalidParameter(
      name('solver'),
      `minibatch or auto with ${minibatchOnly.map((k) => optionName(k)).join(', ')} (L-BFGS has no learning rate, epochs or batches; drop them, or pin C with ${optionName('weightDecay')})`,
      'lbfgs',
    );
  }
  if (!SWEEP_ENGINES.includes(resolved.sweepEngine))
    throw invalidParameter(name('sweepEngine'), `one of ${SWEEP_ENGINES.join(', ')}`, resolved.sweepEngine);
  if (!BACKENDS.includes(resolved.backend))
    throw invalidParameter(name('backend'), `one of ${BACKENDS.join(', ')}`, resolved.backend);
  for (const [key, ok] of [
    ['c', (v: number) => v > 0],
    ['lr', (v: number) => v > 0],
    ['weightDecay', (v: number) => v >= 0],
  ] as const) {
    const values = resolved.grid[key];
    if (
      !Array.isArray(values) ||
      values.length === 0 ||
      !values.every((v: unknown) => typeof v === 'number' && Number.isFinite(v) && ok(v))
    )
      throw invalidParameter(`${name('grid')}.${key}`, 'a non-empty list of valid numbers', values);
  }
  return { resolved, given };
}

/** lbfgs or minibatch, from the option and what the user gave (see SOLVERS). */
export function resolveSolver(
  o: Pick<TrainHeadOptions, 'solver' | 'sweep' | 'hidden'>,
  given: Set<string>,
): { solver: 'lbfgs' | 'minibatch'; why: string } {
  if (o.solver === 'stream') throw new Error('resolveSolver: solver stream is decided by trainHead');
  if (o.solver !== 'auto') return { solver: o.solver, why: `${optionName('solver')} ${o.solver}` };
  if (o.hidden > 0) return { solver: 'minibatch', why: `a hidden layer (${optionName('hidden')} ${o.hidden})` };
  if (!o.sweep) return { solver: 'minibatch', why: 'no sweep' };
  const minibatch = MINIBATCH_OPTIONS.filter((k) => given.has(k));
  if (minibatch.length > 0)
    return { solver: 'minibatch', why: `${minibatch.map((k) => optionName(k)).join(', ')} given` };
  return { solver: 'lbfgs', why: 'the default for a linear head' };
}

/** The grid with each option the user gave pinned to its value. */
function pinnedGrid(o: TrainHeadOptions, given: Set<string>): SweepGrid {
  return {
    c: o.grid.c,
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
/** The options with train and val named as the cache names them (`train` may be cached as `training`), said once. */
async function cachedSplitNames(
  cache: FeatureCache,
  o: TrainHeadOptions,
  log: (line: string) => void,
): Promise<TrainHeadOptions> {
  const [trainSplit, valSplit] = [await cache.resolveSplit(o.trainSplit), await cache.resolveSplit(o.valSplit)];
  for (const [asked, found] of [
    [o.trainSplit, trainSplit],
    [o.valSplit, valSplit],
  ])
    if (asked !== found) log(`train-head: split ${asked} is cached as ${found}`);
  return { ...o, trainSplit, valSplit };
}

export async function trainHead(options: Partial<TrainHeadOptions> = {}): Promise<TrainHeadResult> {
  const { resolved, given } = resolveTrainHeadOptions(options);
  const log = resolved.log ?? (() => {});
  // Refuse a directory we may not write into before spending time on training.
  await inspectHeadDir(resolved.head);
  const cache = await FeatureCache.open(resolved.cache);
  const o = await cachedSplitNames(cache, resolved, log);
  const scaled = await atScale(o, given, cache, log);
  if (typeof scaled !== 'string' && scaled !== null) return scaled;
  const stages: Record<string, number> = {};
  let started = performance.now();
  const lap = (name: string) => {
    stages[name] = (performance.now() - started) / 1000;
    started = performance.now();
  };
  const { train, val, validation } = await loadSplits(cache, o);
  lap('load');
  const classes = cache.manifest.classes;
  const dim = cache.dim;
  if (validation === 'none')
    log(
      `train-head: no "${o.valSplit}" split in ${o.cache} and no valFraction: training without validation (metrics are on train)`,
    );
  for (const note of dataNotes(train, val, classes, dim)) log(`train-head: ${note}`);
  const runtime = await loadTf(o.backend);
  log(
    `train-head: TensorFlow.js backend ${runtime.backend}${runtime.skipped.length > 0 ? ` (not ${runtime.skipped.join('; not ')})` : ''}`,
  );

  const { solver, why } = resolveSolver(o, given);
  if (typeof scaled === 'string') log(`train-head: cache size: ${scaled}`);
  log(`train-head: solver ${solver} (${why})`);
  const fitted =
    solver === 'lbfgs'
      ? await fitByProbe(o, given, train, dim, classes, log)
      : await fitByMinibatch(o, given, runtime, train, val, dim, classes, log);
  const { setting, sweep, sweepSkipped, normalization, result } = fitted;
  requireFiniteFit(result, setting);
  lap('fit');
  const temperature = fitted.temperatureFit?.temperature ?? sweep?.temperature ?? 1;
  const temperatureFit = fitted.temperatureFit ?? null;
  const headOptions: HeadOptions = {
    ...o,
    lr: setting.lr ?? o.lr,
    weightDecay: setting.weightDecay,
    epochs: setting.epochs ?? 0,
  };
  // Only the rows the metrics are on (val, or train without validation) need the head's normalisation here.
  const evaluated = copy(val ?? train);
  applyNormalization(normalization, evaluated.features, evaluated.count, dim);
  const logits = predictLogits(runtime.tf, result.layers, evaluated.features, evaluated.count);
  const metrics = classificationMetrics(softmaxRows(logits, classes.length, temperature), evaluated.labels, classes);
  const calibration = calibrationReport(logits, evaluated.labels, classes.length, temperature, softmaxRows);
  lap('evaluate');
  const evaluatedOn = validation === 'none' ? 'train' : 'val';
  const info: HeadInfo & { temperatureFit?: TemperatureFit | null } = {
    format: 1,
    classes,
    normalization,
    provenance: headProvenance(cache.manifest, o.cache, runtime, fitted.engine),
    options: {
      // The probe has no learning rate, epochs or batches: only what shaped its fit is recorded.
      ...(setting.solver === 'lbfgs'
        ? {
            hidden: 0,
            weightDecay: setting.weightDecay,
            classWeight: o.classWeight,
            monitor: o.monitor,
            seed: o.seed,
            iterations: fitted.probe!.iterations,
          }
        : pickHeadOptions(headOptions)),
      solver: setting.solver,
      c: setting.c,
      normalize: setting.normalize,
      trainSplit: o.trainSplit,
      valSplit: validation === 'split' ? o.valSplit : null,
      valFraction: o.valFraction,
      sweep: sweep
        ? {
            method: sweep.method,
            folds: sweep.folds,
            holdoutFraction: o.holdoutFraction,
            fixed: sweep.fixed,
            candidates: sweep.candidates.length,
          }
        : null,
    },
    bestEpoch: result.bestEpoch,
    summary: {
      top1: metrics.top1,
      top5: metrics.top5,
      ece: calibration.after.ece,
      nll: calibration.after.nll,
      evaluatedOn,
      trainRows: train.count,
      valRows: val?.count ?? 0,
    },
    ...(sweep ? { temperature, temperatureFit } : {}),
  };
  const summary =
    `${train.count} train / ${val?.count ?? 0} val rows, ${classes.length} classes, ${settingText(setting)}, ` +
    `${evaluatedOn} top-1 ${metrics.top1.toFixed(4)}, ECE ${calibration.after.ece.toFixed(3)} (T = ${temperature.toFixed(3)}), trained on ${fitted.engine === 'onnxruntime' ? 'onnxruntime' : `tfjs ${runtime.backend}`}`;
  const metricsJson = { ...metrics, evaluatedOn, calibration, temperatureFit, sweep, sweepSkipped };
  await saveHead(runtime.tf, o.head, {
    info,
    layers: result.layers,
    extras: {
      'history.json': `${JSON.stringify(result.history, null, 2)}\n`,
      'metrics.json': `${JSON.stringify(metricsJson, null, 2)}\n`,
      'curves.html': curvesPage(
        result.history,
        validation === 'none' ? null : metrics,
        summary,
        validation === 'none' || sweep ? null : result.bestEpoch,
        { calibration, sweep: sweep?.candidates ?? null, chosen: sweep?.chosen ?? null },
      ),
    },
  });
  lap('save');
  return {
    head: o.head,
    backend: runtime.backend,
    backendSkipped: runtime.skipped,
    classes,
    trainRows: train.count,
    valRows: val?.count ?? 0,
    validation,
    setting,
    sweep,
    sweepSkipped,
    temperature,
    temperatureFit,
    bestEpoch: result.bestEpoch,
    stoppedEarly: result.stoppedEarly,
    secondsPerEpoch: result.secondsPerEpoch,
    history: result.history,
    metrics,
    calibration,
    probe: fitted.probe,
    engine: fitted.engine,
    stages,
  };
}

/**
 * The streaming path when it applies: solver stream, or solver auto for the default linear probe on a cache too
 * large for it (chooseScale: the memory budget or the probe's work limit). Says which and why in one line.
 */
async function atScale(
  o: TrainHeadOptions,
  given: Set<string>,
  cache: FeatureCache,
  log: (line: string) => void,
): Promise<TrainHeadResult | string | null> {
  // Auto considers streaming only where it would otherwise choose the probe (see resolveSolver).
  const probeDefault = o.solver === 'auto' && o.hidden === 0 && o.sweep && !MINIBATCH_OPTIONS.some((k) => given.has(k));
  if (o.solver !== 'stream' && !probeDefault) return null;
  if (o.hidden > 0)
    throw invalidParameter(
      'solver',
      `lbfgs, minibatch or auto with a hidden layer (${optionName('hidden')} ${o.hidden}): the streaming solver fits a linear head`,
      'stream',
    );
  if (o.valFraction !== null && o.solver === 'stream')
    throw invalidParameter(
      'solver',
      `lbfgs, minibatch or auto with ${optionName('valFraction')}: streaming validates on the val split`,
      'stream',
    );
  if (o.valFraction !== null) return null;
  const rows = FeatureCache.liveRows(await cache.latest(o.trainSplit));
  const decision = chooseScale(rows, cache.dim, cache.manifest.classes.length, o.memory * 2 ** 20);
  // Not streaming: the reason is said on trainHead's solver line.
  if (o.solver === 'auto' && !decision.stream) return decision.why;
  log(
    `train-head: solver stream (${o.solver === 'auto' ? `auto: ${decision.why}` : `${optionName('solver')} stream`})`,
  );
  return trainHeadAtScale({
    ...o,
    epochs: given.has('epochs') ? o.epochs : STREAM_EPOCHS,
    memoryBytes: o.memory * 2 ** 20,
    given,
    why: o.solver === 'auto' ? decision.why : `${optionName('solver')} stream`,
    log,
  });
}

interface Fitted {
  setting: TrainHeadResult['setting'];
  sweep: SweepSummary | null;
  sweepSkipped: string | null;
  /** Fitted on all of train; val and the saved head use it. */
  normalization: Normalization;
  result: Pick<TrainResult, 'layers' | 'history' | 'stoppedEarly'> & {
    bestEpoch: number | null;
    secondsPerEpoch: number | null;
  };
  probe: TrainHeadResult['probe'];
  /** What trained the saved head. */
  engine: 'tfjs' | 'onnxruntime';
  /** The probe's temperature, fitted out of fold for the refit; absent: the sweep's temperature is used. */
  temperatureFit?: TemperatureFit;
}

/** How the saved temperature was fitted (head.json, metrics.json and the result's `temperatureFit`). */
export interface TemperatureFit {
  method: 'out-of-fold';
  /** Fold models at the chosen normalisation, C scaled to the refit's L2 strength λ. */
  folds: number;
  rows: number;
  normalize: NormalizationKind;
  c: number | null;
  lambda: number;
  /** Shipped: `fitted`, or 1 where `fitted` beats 1 out of fold by less than one paired standard error (`gain`). */
  temperature: number;
  fitted: number;
  gain: { mean: number; se: number };
  /** The sweep's temperature (fitted on its own fold or hold-out models at their λ), not used. */
  sweepTemperature: number;
  /** Pooled out-of-fold NLL before and after the temperature. */
  nll: { before: number; after: number };
  seconds: number;
}

/**
 * The refit's temperature, out of fold at the chosen setting (see outOfFoldTemperature); where no k-fold can be
 * drawn, undefined and the sweep's temperature stands.
 */
async function refitTemperature(
  train: Labelled,
  dim: number,
  classes: string[],
  choice: { normalize: NormalizationKind; c: number },
  sweepTemperature: number,
  o: TrainHeadOptions,
  mm: MatMul,
  log: (l: string) => void,
): Promise<TemperatureFit | undefined> {
  const oof = await outOfFoldTemperature(
    train,
    dim,
    classes.length,
    choice.normalize,
    choice.c,
    { seed: o.seed, keys: train.paths, classNames: classes, classWeight: o.classWeight },
    mm,
  );
  if (typeof oof === 'string') {
    log(`train-head: temperature from the sweep (${sweepTemperature.toFixed(3)}): no out-of-fold fit: ${oof}`);
    return undefined;
  }
  log(
    `train-head: temperature ${oof.temperature.toFixed(3)} out of fold for the refit (${oof.folds} fits at C ${cText(Number.isFinite(choice.c) ? choice.c : null)}, λ ${oof.lambda.toPrecision(3)}, on ${oof.rows} rows: fitted ${oof.fitted.toFixed(3)}, NLL gain ${oof.gain.mean.toFixed(4)} ± ${oof.gain.se.toFixed(4)}${oof.temperature === 1 ? ', within one standard error: T = 1' : ''}; the sweep's was ${sweepTemperature.toFixed(3)}), ${oof.seconds.toFixed(2)} s`,
  );
  return {
    method: 'out-of-fold',
    folds: oof.folds,
    rows: oof.rows,
    normalize: choice.normalize,
    c: Number.isFinite(choice.c) ? choice.c : null,
    lambda: oof.lambda,
    temperature: oof.temperature,
    fitted: oof.fitted,
    gain: oof.gain,
    sweepTemperature,
    nll: oof.nll,
    seconds: oof.seconds,
  };
}

/** The L-BFGS probe: C × normalisation chosen on folds of train, then one converged fit on all of it. */
async function fitByProbe(
  o: TrainHeadOptions,
  given: Set<string>,
  train: Labelled,
  dim: number,
  classes: string[],
  log: (l: string) => void,
): Promise<Fitted> {
  // An explicit weight decay is the probe's L2 strength λ on all of train: C = 1/(λ·n), held fixed across folds as
  // scikit-learn holds C.
  const pinnedC = given.has('weightDecay') ? cForStrength(o.weightDecay, train.count, classes.length) : null;
  let choice = { normalize: o.normalize, c: pinnedC ?? DEFAULT_C };
  let sweep: SweepSummary | null = null;
  let sweepSkipped: string | null = o.sweep ? null : 'not asked (sweep: false)';
  const mm = new MatMul();
  try {
    if (o.sweep) {
      const grid = {
        c: pinnedC === null ? o.grid.c : [pinnedC],
        normalize: given.has('normalize') ? [o.normalize] : o.grid.normalize,
      };
      const selection = await selectProbe(
        train,
        dim,
        classes.length,
        {
          grid,
          holdoutFraction: o.holdoutFraction,
          seed: o.seed,
          classWeight: o.classWeight,
          monitor: o.monitor,
          keys: train.paths,
          classNames: classes,
          log,
        },
        mm,
      );
      if (typeof selection === 'string') {
        sweepSkipped = selection;
        log(`train-head: no sweep: ${selection}; fitting C ${choice.c} with normalize ${choice.normalize}`);
      } else {
        const { table, chosen, ...rest } = selection;
        const fixed = (['weightDecay', 'normalize'] as const).filter((k) => given.has(k)).map((k) => optionName(k));
        sweep = { ...rest, solver: 'lbfgs', engine: 'onnxruntime', candidates: table, chosen, fixed };
        choice = { normalize: chosen.normalize, c: chosen.c! };
        log(sweepLine(sweep));
      }
    }
    const head: ProbeHead = await fitProbeHead(
      train,
      dim,
      classes.length,
      choice.normalize,
      choice.c,
      o.classWeight,
      mm,
    );
    log(
      `train-head: L-BFGS fit on all ${train.count} rows: ${head.iterations} iterations (stopped: ${head.stopped}), ${head.seconds.toFixed(2)} s`,
    );
    const temperatureFit = sweep
      ? await refitTemperature(train, dim, classes, choice, sweep.temperature, o, mm, log)
      : undefined;
    return {
      setting: {
        solver: 'lbfgs',
        normalize: choice.normalize,
        c: Number.isFinite(choice.c) ? choice.c : null,
        lr: null,
        weightDecay: l2Strength(choice.c, train.count, classes.length),
        epochs: null,
      },
      sweep,
      sweepSkipped,
      normalization: head.normalization,
      result: { layers: head.layers, history: [], bestEpoch: null, stoppedEarly: false, secondsPerEpoch: null },
      probe: { iterations: head.iterations, stopped: head.stopped, seconds: head.seconds },
      engine: 'onnxruntime',
      ...(temperatureFit ? { temperatureFit } : {}),
    };
  } finally {
    await mm.dispose();
  }
}

/** Epochs of Adam or SGD: lr × weight decay × normalisation (and the epoch count) chosen on folds of train, then a refit. */
async function fitByMinibatch(
  o: TrainHeadOptions,
  given: Set<string>,
  runtime: TfRuntime,
  train: Labelled,
  val: Labelled | null,
  dim: number,
  classes: string[],
  log: (l: string) => void,
): Promise<Fitted> {
  let setting: TrainHeadResult['setting'] = {
    solver: 'minibatch',
    normalize: o.normalize,
    c: null,
    lr: o.lr,
    weightDecay: o.weightDecay,
    epochs: o.epochs,
  };
  let sweep: SweepSummary | null = null;
  let sweepSkipped: string | null = o.sweep ? null : 'not asked (sweep: false)';
  // The sweep and the refit run on the same engine.
  const engine: Engine = chooseEngine(o.sweepEngine, runtime.backend, o);
  if (o.sweep) {
    const fixed = SWEPT_OPTIONS.filter((k) => given.has(k));
    const grid = pinnedGrid(o, given);
    log(minibatchSweepLine(grid, fixed, given.has('epochs') ? o.epochs : null, o.sweepEpochs));
    const selection = await selectSetting(
      runtime.tf,
      train,
      dim,
      classes.length,
      { ...o, epochs: given.has('epochs') ? o.epochs : o.sweepEpochs },
      {
        grid,
        fixedEpochs: given.has('epochs') ? o.epochs : undefined,
        holdoutFraction: o.holdoutFraction,
        patience: o.sweepPatience,
        keys: train.paths,
        classNames: classes,
        log,
        engine,
        minSteps: o.sweepMinSteps,
      },
    );
    if (typeof selection === 'string') {
      sweepSkipped = selection;
      log(`train-head: no sweep: ${selection}; training the ${given.size > 0 ? 'given' : 'default'} setting once`);
    } else {
      const { table, chosen, ...rest } = selection;
      sweep = {
        ...rest,
        solver: 'minibatch',
        engine,
        candidates: table,
        chosen,
        fixed: fixed.map((k) => optionName(k)),
        skipped: [],
      };
      setting = {
        solver: 'minibatch',
        normalize: chosen.normalize,
        c: null,
        lr: chosen.lr,
        weightDecay: chosen.weightDecay,
        epochs: chosen.epoch,
      };
      log(sweepLine(sweep));
    }
  }
  const trainRows = copy(train);
  const valRows = val ? copy(val) : null;
  const normalization = fitNormalization(setting.normalize, trainRows.features, trainRows.count, dim);
  applyNormalization(normalization, trainRows.features, trainRows.count, dim);
  if (valRows) applyNormalization(normalization, valRows.features, valRows.count, dim);
  const headOptions: HeadOptions = { ...o, lr: setting.lr!, weightDecay: setting.weightDecay, epochs: setting.epochs! };
  const control = {
    // After a sweep the epoch count is already chosen on the hold-out: val only reports.
    selectOnVal: sweep === null,
    onEpoch: (st: EpochStats) => log(epochLine(st, headOptions.epochs)),
  };
  const result =
    engine === 'onnxruntime'
      ? await fitHeadOrt(trainRows, valRows, dim, classes.length, headOptions, control)
      : fitHead(runtime.tf, trainRows, valRows, dim, classes.length, headOptions, control);
  return { setting, sweep, sweepSkipped, normalization, result, probe: null, engine };
}

/** What the mini-batch sweep varies and how many settings that makes, in one line (fixed options are not swept). */
export function minibatchSweepLine(
  grid: SweepGrid,
  fixed: readonly string[],
  epochs: number | null,
  maxEpochs: number,
): string {
  const axes = (
    [
      ['lr', grid.lr.length],
      ['weight decay', grid.weightDecay.length],
      ['normalize', grid.normalize.length],
    ] as const
  ).filter(([, n]) => n > 1);
  const settings = grid.lr.length * grid.weightDecay.length * grid.normalize.length;
  const swept = axes.length > 0 ? axes.map(([name, n]) => `${name} (${n})`).join(' × ') : 'nothing';
  return (
    `train-head: mini-batch sweep over ${swept}: ${settings} setting${settings === 1 ? '' : 's'}` +
    `${epochs === null ? `, epoch count chosen up to ${maxEpochs} on the hold-out` : `, ${epochs} epochs each`}` +
    (fixed.length > 0 ? `; fixed: ${fixed.map((k) => optionName(k)).join(', ')}` : '')
  );
}

function pickHeadOptions(o: HeadOptions): HeadOptions {
  const keys = Object.keys(DEFAULT_HEAD_OPTIONS) as (keyof HeadOptions)[];
  return Object.fromEntries(keys.map((k) => [k, o[k]])) as unknown as HeadOptions;
}

/** C as printed: no penalty (λ = 0, JSON's null) is C = inf. */
export { settingText };

/** The chosen setting in one line. */
export function sweepLine(s: SweepSummary): string {
  const c = s.chosen;
  const what =
    s.solver === 'lbfgs'
      ? `normalize ${c.normalize}, C ${cText(c.c)} (${s.candidates.filter((r) => r.tied).length} of ${s.candidates.length} candidates tied within one standard error) `
      : `normalize ${c.normalize}, lr ${c.lr}, weight decay ${c.weightDecay}, ${c.epoch} epochs `;
  return (
    `train-head: sweep chose ${what}` +
    `(held-out acc ${c.holdoutAcc.toFixed(4)}, loss ${c.holdoutLoss.toFixed(4)}${c.calibratedLoss === null ? '' : `, calibrated ${c.calibratedLoss.toFixed(4)}`}; ${s.candidates.length} candidates, ${s.method === 'kfold' ? `${s.folds}-fold` : `hold-out of ${s.heldRows} rows`}, ` +
    `temperature ${s.temperature.toFixed(3)}; ${s.seconds.toFixed(1)} s, ${s.gflopsPerSecond.toFixed(1)} GFLOP/s)` +
    (s.fixed.length > 0 ? `; fixed: ${s.fixed.join(', ')}` : '')
  );
}

export function epochLine(s: EpochStats, epochs: number): string {
  return (
    `epoch ${String(s.epoch).padStart(3)}/${epochs} lr ${s.lr.toPrecision(3)}  loss ${s.trainLoss.toFixed(4)} acc ${s.trainAcc.toFixed(4)}` +
    (s.valLoss === null ? '' : `  | val loss ${s.valLoss.toFixed(4)} acc ${s.valAcc!.toFixed(4)}`) +
    `  (${s.seconds.toFixed(2)} s)`
  );
}
