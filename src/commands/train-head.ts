/**
 * `featcache train-head`: store → head. Reads cached features through the reader API, trains a softmax head with
 * TensorFlow.js, keeps the best validation weights, and saves a TF.js LayersModel with its provenance.
 */
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { stratifiedSplit } from '../dataset/split.js';
import { FeatcacheError } from '../errors.js';
import { curvesPage } from '../head/curves.js';
import { type Metrics, classificationMetrics } from '../head/metrics.js';
import { NORMALIZATIONS, type NormalizationKind, applyNormalization, fitNormalization } from '../store/normalize.js';
import { BACKENDS, type BackendChoice, loadTf } from '../head/runtime.js';
import { type HeadInfo, saveHead } from '../head/saved.js';
import { CLASS_WEIGHTS, DEFAULT_HEAD_OPTIONS, type EpochStats, type HeadOptions, MONITORS, OPTIMIZERS, type Split, predictProbabilities, trainHead } from '../head/train.js';
import { nonNegativeInteger, parseChoice, positiveInteger } from '../errors.js';
import { type FeatureSet, FeatureCache } from '../store/reader.js';
import { toolVersions } from '../version.js';
import { type Args, DEFAULT_HEAD, cacheOption, emit, jsonOption } from '../cli/flags.js';

export interface TrainHeadOptions extends HeadOptions {
  cache: string;
  head: string;
  trainSplit: string;
  valSplit: string;
  valFraction?: number | undefined;
  normalize: NormalizationKind;
  backend: BackendChoice;
  log?: (line: string) => void;
}

export interface TrainHeadResult {
  head: string;
  backend: string;
  backendSkipped: string[];
  classes: string[];
  trainRows: number;
  valRows: number;
  validation: 'split' | 'fraction' | 'none';
  bestEpoch: number;
  stoppedEarly: boolean;
  secondsPerEpoch: number;
  history: EpochStats[];
  metrics: Metrics;
}

function labelled(set: FeatureSet): Split & { paths: string[] } {
  return subset(set, [...set.labels.keys()].filter((i) => set.labels[i]! >= 0), set.dim);
}

function subset(split: Split & { paths: string[] }, rows: number[], dim: number): Split & { paths: string[] } {
  const features = new Float32Array(rows.length * dim);
  rows.forEach((row, k) => features.set(split.features.subarray(row * dim, (row + 1) * dim), k * dim));
  return { features, labels: Int32Array.from(rows, (r) => split.labels[r]!), count: rows.length, paths: rows.map((r) => split.paths[r]!) };
}

async function loadSplits(cache: FeatureCache, options: TrainHeadOptions) {
  const all = labelled(await cache.read(options.trainSplit));
  if (all.count === 0) throw new FeatcacheError(`--cache ${options.cache}: split ${options.trainSplit} has no labelled rows; extract a labelled dataset`);
  const dim = cache.dim;
  if (options.valFraction !== undefined) {
    if (!(options.valFraction > 0 && options.valFraction < 1)) throw new FeatcacheError(`--val-fraction: expected a number between 0 and 1, got ${options.valFraction}`);
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

export async function runTrainHead(options: TrainHeadOptions): Promise<TrainHeadResult> {
  const log = options.log ?? (() => {});
  const cache = await FeatureCache.open(options.cache);
  const { train, val, validation } = await loadSplits(cache, options);
  const classes = cache.manifest.classes;
  if (validation === 'none') log(`train-head: no "${options.valSplit}" split in ${options.cache} and no --val-fraction: training without validation (no best-epoch restore or early stopping)`);
  const normalization = fitNormalization(options.normalize, train.features, train.count, cache.dim);
  applyNormalization(normalization, train.features, train.count, cache.dim);
  if (val) applyNormalization(normalization, val.features, val.count, cache.dim);
  const runtime = await loadTf(options.backend);
  log(`train-head: TensorFlow.js backend ${runtime.backend}${runtime.skipped.length > 0 ? ` (not ${runtime.skipped.join('; not ')})` : ''}`);
  const result = trainHead(runtime.tf, train, val, cache.dim, classes.length, options, (s) =>
    log(`epoch ${String(s.epoch).padStart(3)}/${options.epochs} lr ${s.lr.toPrecision(3)}  loss ${s.trainLoss.toFixed(4)} acc ${s.trainAcc.toFixed(4)}` +
      (s.valLoss === null ? '' : `  | val loss ${s.valLoss.toFixed(4)} acc ${s.valAcc!.toFixed(4)}`) + `  (${s.seconds.toFixed(2)} s)`));
  const evaluated = val ?? train;
  const probabilities = predictProbabilities(runtime.tf, result.layers, evaluated.features, evaluated.count);
  const metrics = classificationMetrics(probabilities, evaluated.labels, classes);
  const m = cache.manifest;
  const info: HeadInfo = {
    format: 1,
    classes,
    normalization,
    provenance: {
      modelSha256: m.modelSha256, modelFile: m.modelFile, tappedTensor: m.tappedTensor, preset: m.preset, exif: m.exif, icc: m.icc, precision: m.precision ?? 'fp32', dim: m.dim,
      cache: path.resolve(options.cache), trainedAt: new Date().toISOString(), backend: runtime.backend, backendSkipped: runtime.skipped, versions: toolVersions(),
    },
    options: { ...pickHeadOptions(options), normalize: options.normalize, trainSplit: options.trainSplit, valSplit: validation === 'split' ? options.valSplit : null, valFraction: options.valFraction ?? null },
    bestEpoch: result.bestEpoch,
    summary: { top1: metrics.top1, top5: metrics.top5, evaluatedOn: validation === 'none' ? 'train' : 'val', trainRows: train.count, valRows: val?.count ?? 0 },
  };
  const summary = `${train.count} train / ${val?.count ?? 0} val rows, ${classes.length} classes, best epoch ${result.bestEpoch}, ` +
    `${validation === 'none' ? 'train' : 'val'} top-1 ${metrics.top1.toFixed(4)}, backend ${runtime.backend}`;
  await saveHead(runtime.tf, options.head, {
    info,
    layers: result.layers,
    extras: {
      'history.json': `${JSON.stringify(result.history, null, 2)}\n`,
      'metrics.json': `${JSON.stringify(metrics, null, 2)}\n`,
      'curves.html': curvesPage(result.history, validation === 'none' ? null : metrics, summary, validation === 'none' ? null : result.bestEpoch),
    },
  });
  return {
    head: options.head, backend: runtime.backend, backendSkipped: runtime.skipped, classes, trainRows: train.count, valRows: val?.count ?? 0, validation,
    bestEpoch: result.bestEpoch, stoppedEarly: result.stoppedEarly, secondsPerEpoch: result.secondsPerEpoch, history: result.history, metrics,
  };
}

function pickHeadOptions(o: HeadOptions): HeadOptions {
  const keys = Object.keys(DEFAULT_HEAD_OPTIONS) as (keyof HeadOptions)[];
  return Object.fromEntries(keys.map((k) => [k, o[k]])) as unknown as HeadOptions;
}

export function trainSummaryLine(r: TrainHeadResult): string {
  const m = r.metrics;
  const on = r.validation === 'none' ? 'train' : 'val';
  return `train-head: ${r.trainRows} train / ${r.valRows} val rows, best epoch ${r.bestEpoch}${r.stoppedEarly ? ' (stopped early)' : ''}; ` +
    `${on} top-1 ${m.top1.toFixed(4)}${m.top5 === null ? '' : `, top-5 ${m.top5.toFixed(4)}`}; ${r.secondsPerEpoch.toFixed(3)} s/epoch on ${r.backend} → ${r.head} (curves: ${path.join(r.head, 'curves.html')})`;
}

const d = DEFAULT_HEAD_OPTIONS;

export const trainHeadCommand: CommandModule = {
  command: 'train-head',
  describe: 'train a softmax head on cached features (TensorFlow.js) and save it as a TF.js LayersModel',
  builder: (y: Argv) =>
    y
      .option('cache', cacheOption)
      .option('head', { type: 'string', default: DEFAULT_HEAD, describe: 'directory to write the head to' })
      .option('train-split', { type: 'string', default: 'train', describe: 'cached split to train on' })
      .option('val-split', { type: 'string', default: 'val', describe: 'cached split to validate on (if present)' })
      .option('val-fraction', { type: 'number', describe: 'validate on a stratified fraction of the train split instead' })
      .option('epochs', { type: 'number', default: d.epochs })
      .option('batch-size', { type: 'number', default: d.batchSize })
      .option('optimizer', { type: 'string', default: d.optimizer, choices: [...OPTIMIZERS] })
      .option('lr', { type: 'number', default: d.lr, describe: 'learning rate' })
      .option('momentum', { type: 'number', default: d.momentum, describe: 'SGD momentum' })
      .option('weight-decay', { type: 'number', default: d.weightDecay, describe: 'L2 penalty added to gradients (PyTorch weight_decay)' })
      .option('step-size', { type: 'number', default: d.stepSize, describe: 'StepLR: decay the learning rate every N epochs (0 = off)' })
      .option('gamma', { type: 'number', default: d.gamma, describe: 'StepLR decay factor' })
      .option('patience', { type: 'number', default: d.patience, describe: 'early stopping: epochs without improvement (0 = off)' })
      .option('monitor', { type: 'string', default: d.monitor, choices: [...MONITORS], describe: 'validation metric for best-epoch restore and early stopping' })
      .option('class-weight', { type: 'string', default: d.classWeight, choices: [...CLASS_WEIGHTS] })
      .option('normalize', { type: 'string', default: 'none', choices: [...NORMALIZATIONS], describe: 'feature normalisation (statistics from train, saved with the head)' })
      .option('hidden', { type: 'number', default: d.hidden, describe: 'units of an optional ReLU hidden layer (0 = none)' })
      .option('seed', { type: 'number', default: d.seed, describe: 'seed for initialisation and shuffling (same seed, same head)' })
      .option('backend', { type: 'string', default: 'auto', choices: [...BACKENDS], describe: 'TensorFlow.js backend (auto: tensorflow, then wasm, then cpu)' })
      .option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as Args;
    const result = await runTrainHead({
      cache: a.cache, head: a.head, trainSplit: a['train-split'], valSplit: a['val-split'], valFraction: a['val-fraction'],
      epochs: positiveInteger('--epochs', a.epochs), batchSize: positiveInteger('--batch-size', a['batch-size']),
      optimizer: parseChoice('--optimizer', a.optimizer, OPTIMIZERS), lr: a.lr, momentum: a.momentum, weightDecay: a['weight-decay'],
      stepSize: nonNegativeInteger('--step-size', a['step-size']), gamma: a.gamma, patience: nonNegativeInteger('--patience', a.patience),
      monitor: parseChoice('--monitor', a.monitor, MONITORS), classWeight: parseChoice('--class-weight', a['class-weight'], CLASS_WEIGHTS),
      normalize: parseChoice('--normalize', a.normalize, NORMALIZATIONS), hidden: nonNegativeInteger('--hidden', a.hidden),
      seed: a.seed, backend: a.backend, log: a.json ? undefined : (line) => process.stderr.write(`${line}\n`),
    });
    emit(a.json, result, () => trainSummaryLine(result));
  },
};
