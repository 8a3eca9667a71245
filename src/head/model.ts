/**
 * The head's vocabulary, shared by both solvers (the L-BFGS probe in probe/, mini-batch training in minibatch/),
 * the saved head and the bundle: the training options and their checks, a split of rows, the dense layers a head
 * is made of, class weights and the softmax.
 */
import { FeatcacheError, invalidParameter } from '../errors.js';

export const OPTIMIZERS = ['adam', 'sgd'] as const;
export const MONITORS = ['val_loss', 'val_acc'] as const;
export const CLASS_WEIGHTS = ['none', 'balanced'] as const;

export interface HeadOptions {
  /** Units of an optional ReLU hidden layer; 0 for a single softmax layer. */
  hidden: number;
  optimizer: (typeof OPTIMIZERS)[number];
  lr: number;
  /** SGD momentum (PyTorch semantics: v ← μv + g, no dampening). */
  momentum: number;
  /** L2 penalty added to the gradient, as PyTorch's `weight_decay`. */
  weightDecay: number;
  /** StepLR: multiply the learning rate by `gamma` every `stepSize` epochs; 0 disables it. */
  stepSize: number;
  gamma: number;
  batchSize: number;
  epochs: number;
  /** Stop after this many epochs without improvement of `monitor`; 0 disables early stopping. */
  patience: number;
  monitor: (typeof MONITORS)[number];
  classWeight: (typeof CLASS_WEIGHTS)[number];
  seed: number;
}

export const DEFAULT_HEAD_OPTIONS: Readonly<HeadOptions> = Object.freeze({
  hidden: 0,
  optimizer: 'adam',
  lr: 1e-3,
  momentum: 0.9,
  weightDecay: 0,
  stepSize: 0,
  gamma: 0.1,
  batchSize: 32,
  epochs: 10,
  patience: 0,
  monitor: 'val_loss',
  classWeight: 'none',
  seed: 0,
});

export interface Split {
  features: Float32Array;
  labels: Int32Array;
  count: number;
}

export interface EpochStats {
  epoch: number;
  lr: number;
  trainLoss: number;
  trainAcc: number;
  valLoss: number | null;
  valAcc: number | null;
  seconds: number;
}

export interface DenseWeights {
  kernel: Float32Array;
  /** [inputs, units] */
  shape: [number, number];
  bias: Float32Array;
  activation: 'relu' | 'softmax';
}

/** sklearn's "balanced": n / (classes × n_c), so every class carries the same total weight. */
export function balancedClassWeights(labels: Int32Array, classes: number): Float32Array {
  const counts = new Float32Array(classes);
  for (const l of labels) counts[l]! += 1;
  return counts.map((c) => (c > 0 ? labels.length / (classes * c) : 0));
}

export function classWeightsFor(
  options: Pick<HeadOptions, 'classWeight'>,
  labels: Int32Array,
  classes: number,
): Float32Array {
  return options.classWeight === 'balanced' ? balancedClassWeights(labels, classes) : new Float32Array(classes).fill(1);
}

/** Option checks shared with the job; `name` maps an option to what the user typed (a flag on the CLI). */
export function validateHeadOptions(options: HeadOptions, name: (option: keyof HeadOptions) => string = String): void {
  const integer = (key: keyof HeadOptions, min: number, max = Number.MAX_SAFE_INTEGER) => {
    const v = options[key] as number;
    if (!Number.isInteger(v) || v < min || v > max)
      throw invalidParameter(
        name(key),
        max < Number.MAX_SAFE_INTEGER
          ? `an integer in [${min}, ${max}]`
          : min === 1
            ? 'a positive integer'
            : `an integer >= ${min}`,
        v,
      );
  };
  const real = (key: keyof HeadOptions, ok: (v: number) => boolean, expected: string) => {
    const v = options[key] as number;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw invalidParameter(name(key), expected, v);
  };
  integer('epochs', 1);
  integer('batchSize', 1);
  integer('stepSize', 0);
  integer('patience', 0);
  integer('hidden', 0, MAX_HIDDEN);
  integer('seed', 0);
  real('lr', (v) => v > 0, 'a positive number');
  real('momentum', (v) => v >= 0 && v < 1, 'a number in [0, 1)');
  real('weightDecay', (v) => v >= 0, 'a number >= 0');
  real('gamma', (v) => v > 0, 'a positive number');
  const choice = <T extends string>(key: keyof HeadOptions, choices: readonly T[]) => {
    if (!choices.includes(options[key] as T))
      throw invalidParameter(name(key), `one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`, options[key]);
  };
  choice('optimizer', OPTIMIZERS);
  choice('monitor', MONITORS);
  choice('classWeight', CLASS_WEIGHTS);
}

/** A hidden layer wider than this is a typo, not a head: 1e9 units would try to allocate terabytes of weights. */
export const MAX_HIDDEN = 65_536;

export function validateData(train: Split, dim: number, classes: number): void {
  if (train.count === 0) throw new FeatcacheError('train-head: the training split has no labelled rows');
  if (classes < 2) throw new FeatcacheError(`train-head: need at least 2 classes, the cache has ${classes}`);
  if (train.features.length !== train.count * dim)
    throw new FeatcacheError('train-head: feature array does not match count × dim');
}

/** Row-wise softmax(logits / temperature), in float64 with the max subtracted. */
export function softmaxRows(logits: Float32Array, classes: number, temperature = 1): Float32Array {
  const out = new Float32Array(logits.length);
  for (let o = 0; o < logits.length; o += classes) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[o + c]! / temperature);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(logits[o + c]! / temperature - max);
    for (let c = 0; c < classes; c++) out[o + c] = Math.exp(logits[o + c]! / temperature - max) / sum;
  }
  return out;
}
