/**
 * Training the head with TensorFlow.js, the fast way. Measured on the wasm backend: `model.fit` spends its time in
 * transposed matMuls and in slicing batches out of a large device tensor (35 ms a slice); the matMuls themselves
 * take ~3 ms. So batches are gathered in JS and uploaded, gradients are written out by hand with one explicit
 * transpose, and weights stay on the device until the end (reading a large tensor back costs ~70 ms).
 */
import { FeatcacheError } from '../errors.js';
import { seededRandom, shuffled } from '../util/random.js';
import type { Tf } from './runtime.js';

type Tensor = ReturnType<Tf['tensor']>;
type Variable = ReturnType<Tf['variable']>;

export const OPTIMIZERS = ['adam', 'sgd'] as const;
export const MONITORS = ['val_loss', 'val_acc'] as const;
export const CLASS_WEIGHTS = ['none', 'balanced'] as const;

export interface HeadOptions {
  /** Units of an optional ReLU hidden layer; 0 for a single softmax layer. */
  hidden: number;
  optimizer: (typeof OPTIMIZERS)[number];
  lr: number;
  /** SGD momentum (PyTorch semantics). */
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

export const DEFAULT_HEAD_OPTIONS: HeadOptions = Object.freeze({
  hidden: 0, optimizer: 'adam', lr: 1e-3, momentum: 0.9, weightDecay: 0, stepSize: 0, gamma: 0.1, batchSize: 32, epochs: 10,
  patience: 0, monitor: 'val_loss', classWeight: 'none', seed: 0,
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

export interface TrainResult {
  layers: DenseWeights[];
  history: EpochStats[];
  /** 1-based epoch whose weights were kept (best on validation, or the last without validation). */
  bestEpoch: number;
  stoppedEarly: boolean;
  secondsPerEpoch: number;
}

/** sklearn's "balanced": n / (classes × n_c), so every class carries the same total weight. */
export function balancedClassWeights(labels: Int32Array, classes: number): Float32Array {
  const counts = new Float32Array(classes);
  for (const l of labels) counts[l]! += 1;
  return counts.map((c) => (c > 0 ? labels.length / (classes * c) : 0));
}

export function stepLr(options: Pick<HeadOptions, 'lr' | 'stepSize' | 'gamma'>, epoch: number): number {
  return options.stepSize > 0 ? options.lr * options.gamma ** Math.floor(epoch / options.stepSize) : options.lr;
}

interface Param {
  value: Variable;
  moment1: Variable;
  moment2: Variable;
}

/** PyTorch nn.Linear's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from the seeded PRNG. */
function initParam(tf: Tf, shape: number[], fanIn: number, random: () => number): Param {
  const size = shape.reduce((a, b) => a * b, 1);
  const bound = 1 / Math.sqrt(fanIn);
  const values = Float32Array.from({ length: size }, () => (random() * 2 - 1) * bound);
  return {
    value: tf.variable(tf.tensor(values, shape)),
    moment1: tf.variable(tf.zeros(shape)),
    moment2: tf.variable(tf.zeros(shape)),
  };
}

function validate(options: HeadOptions, train: Split, dim: number, classes: number): void {
  const positive: [string, number][] = [['--epochs', options.epochs], ['--batch-size', options.batchSize], ['--lr', options.lr]];
  for (const [flag, value] of positive) if (!(value > 0)) throw new FeatcacheError(`${flag}: expected a positive number, got ${value}`);
  if (!(options.gamma > 0)) throw new FeatcacheError(`--gamma: expected a positive number, got ${options.gamma}`);
  if (train.count === 0) throw new FeatcacheError('train-head: the training split has no labelled rows');
  if (classes < 2) throw new FeatcacheError(`train-head: need at least 2 classes, the cache has ${classes}`);
  if (train.features.length !== train.count * dim) throw new FeatcacheError('train-head: feature array does not match count × dim');
}

export function trainHead(tf: Tf, train: Split, val: Split | null, dim: number, classes: number, options: HeadOptions, onEpoch?: (s: EpochStats) => void): TrainResult {
  validate(options, train, dim, classes);
  const random = seededRandom(options.seed);
  const sizes = options.hidden > 0 ? [dim, options.hidden, classes] : [dim, classes];
  const params: { kernel: Param; bias: Param }[] = [];
  for (let l = 0; l + 1 < sizes.length; l++) {
    params.push({ kernel: initParam(tf, [sizes[l]!, sizes[l + 1]!], sizes[l]!, random), bias: initParam(tf, [sizes[l + 1]!], sizes[l]!, random) });
  }
  const classWeights = options.classWeight === 'balanced' ? balancedClassWeights(train.labels, classes) : new Float32Array(classes).fill(1);

  /** Logits and, for the hidden layer, its pre-activation. */
  const forward = (x: Tensor) => {
    if (params.length === 1) return { logits: tf.add(tf.matMul(x, params[0]!.kernel.value), params[0]!.bias.value), hiddenPre: null, hidden: null };
    const hiddenPre = tf.add(tf.matMul(x, params[0]!.kernel.value), params[0]!.bias.value);
    const hidden = tf.relu(hiddenPre);
    return { logits: tf.add(tf.matMul(hidden, params[1]!.kernel.value), params[1]!.bias.value), hiddenPre, hidden };
  };

  let step = 0;
  const update = (param: Param, gradient: Tensor, lr: number) => {
    const g = options.weightDecay > 0 ? tf.add(gradient, tf.mul(param.value, options.weightDecay)) : gradient;
    if (options.optimizer === 'sgd') {
      if (options.momentum > 0) {
        param.moment1.assign(tf.add(tf.mul(param.moment1, options.momentum), g));
        param.value.assign(tf.sub(param.value, tf.mul(param.moment1, lr)));
      } else {
        param.value.assign(tf.sub(param.value, tf.mul(g, lr)));
      }
      return;
    }
    const [beta1, beta2, epsilon] = [0.9, 0.999, 1e-8];
    param.moment1.assign(tf.add(tf.mul(param.moment1, beta1), tf.mul(g, 1 - beta1)));
    param.moment2.assign(tf.add(tf.mul(param.moment2, beta2), tf.mul(tf.square(g), 1 - beta2)));
    const mHat = tf.div(param.moment1, 1 - beta1 ** step);
    const vHat = tf.div(param.moment2, 1 - beta2 ** step);
    param.value.assign(tf.sub(param.value, tf.mul(tf.div(mHat, tf.add(tf.sqrt(vHat), epsilon)), lr)));
  };

  /** One step on a batch; returns the batch's weighted loss sum and correct count as device scalars. */
  const trainStep = (x: Tensor, oneHot: Tensor, weights: Tensor, labels: Tensor, lr: number) =>
    tf.tidy(() => {
      step++;
      const { logits, hiddenPre, hidden } = forward(x);
      const logProbs = tf.logSoftmax(logits);
      const weightSum = tf.sum(weights);
      // d(mean weighted CE)/d(logits) = w_i (p_i - y_i) / Σw, PyTorch's CrossEntropyLoss(weight=...) reduction.
      const gradLogits = tf.div(tf.mul(tf.sub(tf.exp(logProbs), oneHot), tf.expandDims(weights, 1)), weightSum);
      const last = params[params.length - 1]!;
      const inputToLast = hidden ?? x;
      update(last.kernel, tf.matMul(tf.transpose(inputToLast), gradLogits), lr);
      update(last.bias, tf.sum(gradLogits, 0), lr);
      if (hidden && hiddenPre) {
        const gradHidden = tf.mul(tf.matMul(gradLogits, tf.transpose(params[1]!.kernel.value)), tf.step(hiddenPre));
        update(params[0]!.kernel, tf.matMul(tf.transpose(x), gradHidden), lr);
        update(params[0]!.bias, tf.sum(gradHidden, 0), lr);
      }
      const lossSum = tf.neg(tf.sum(tf.mul(tf.sum(tf.mul(logProbs, oneHot), 1), weights)));
      const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32'));
      return tf.stack([lossSum, weightSum, correct]);
    });

  const batchTensors = (split: Split, order: Int32Array, start: number, end: number) => {
    const n = end - start;
    const x = new Float32Array(n * dim);
    const oneHot = new Float32Array(n * classes);
    const weights = new Float32Array(n);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const row = order[start + i]!;
      x.set(split.features.subarray(row * dim, (row + 1) * dim), i * dim);
      const label = split.labels[row]!;
      oneHot[i * classes + label] = 1;
      weights[i] = classWeights[label]!;
      labels[i] = label;
    }
    return { x: tf.tensor2d(x, [n, dim]), oneHot: tf.tensor2d(oneHot, [n, classes]), weights: tf.tensor1d(weights), labels: tf.tensor1d(labels, 'int32') };
  };

  const evaluate = (split: Split) => {
    const order = Int32Array.from({ length: split.count }, (_, i) => i);
    let totals = tf.zeros([3]);
    for (let start = 0; start < split.count; start += 1024) {
      const t = batchTensors(split, order, start, Math.min(split.count, start + 1024));
      const next = tf.tidy(() => {
        const logits = forward(t.x).logits;
        const logProbs = tf.logSoftmax(logits);
        // Validation loss is unweighted, so it stays comparable across --class-weight settings.
        const lossSum = tf.neg(tf.sum(tf.mul(logProbs, t.oneHot)));
        const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), t.labels), 'float32'));
        return tf.add(totals, tf.stack([lossSum, tf.scalar(t.x.shape[0]), correct]));
      });
      tf.dispose([totals, t.x, t.oneHot, t.weights, t.labels]);
      totals = next;
    }
    const [lossSum, n, correct] = totals.dataSync();
    totals.dispose();
    return { loss: lossSum! / n!, acc: correct! / n! };
  };

  const history: EpochStats[] = [];
  let best: { epoch: number; score: number; values: Tensor[] } | null = null;
  let sinceBest = 0;
  let stoppedEarly = false;
  const started = performance.now();
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    const epochStarted = performance.now();
    const lr = stepLr(options, epoch);
    const order = shuffled(train.count, random);
    let totals = tf.zeros([3]);
    for (let start = 0; start < train.count; start += options.batchSize) {
      const t = batchTensors(train, order, start, Math.min(train.count, start + options.batchSize));
      const stats = trainStep(t.x, t.oneHot, t.weights, t.labels, lr);
      const next = tf.add(totals, stats);
      tf.dispose([totals, stats, t.x, t.oneHot, t.weights, t.labels]);
      totals = next;
    }
    const [lossSum, weightSum, correct] = totals.dataSync();
    totals.dispose();
    const valStats = val && val.count > 0 ? evaluate(val) : null;
    const stats: EpochStats = {
      epoch: epoch + 1, lr, trainLoss: lossSum! / weightSum!, trainAcc: correct! / train.count,
      valLoss: valStats?.loss ?? null, valAcc: valStats?.acc ?? null, seconds: (performance.now() - epochStarted) / 1000,
    };
    history.push(stats);
    onEpoch?.(stats);
    if (valStats) {
      // Higher is better for both: negate the loss. Ties keep the earlier epoch, like the seeds' `>`.
      const score = options.monitor === 'val_acc' ? valStats.acc : -valStats.loss;
      if (!best || score > best.score) {
        if (best) tf.dispose(best.values);
        best = { epoch: epoch + 1, score, values: params.flatMap((p) => [tf.clone(p.kernel.value), tf.clone(p.bias.value)]) };
        sinceBest = 0;
      } else if (options.patience > 0 && ++sinceBest >= options.patience) {
        stoppedEarly = epoch + 1 < options.epochs;
        break;
      }
    }
  }
  const secondsPerEpoch = (performance.now() - started) / 1000 / history.length;
  const finalValues = best ? best.values : params.flatMap((p) => [p.kernel.value, p.bias.value]);
  const layers: DenseWeights[] = params.map((_, l) => ({
    kernel: finalValues[2 * l]!.dataSync() as Float32Array,
    shape: [sizes[l]!, sizes[l + 1]!],
    bias: finalValues[2 * l + 1]!.dataSync() as Float32Array,
    activation: l + 1 === params.length ? 'softmax' : 'relu',
  }));
  if (best) tf.dispose(best.values);
  for (const p of params) tf.dispose([p.kernel.value, p.kernel.moment1, p.kernel.moment2, p.bias.value, p.bias.moment1, p.bias.moment2]);
  return { layers, history, bestEpoch: best?.epoch ?? history.length, stoppedEarly, secondsPerEpoch };
}

/** Class probabilities [count, classes] from trained dense layers, computed on the tfjs backend. */
export function predictProbabilities(tf: Tf, layers: DenseWeights[], features: Float32Array, count: number): Float32Array {
  const dim = layers[0]!.shape[0];
  const classes = layers.at(-1)!.shape[1];
  const out = new Float32Array(count * classes);
  const tensors = layers.map((l) => ({ kernel: tf.tensor2d(l.kernel, l.shape), bias: tf.tensor1d(l.bias), activation: l.activation }));
  for (let start = 0; start < count; start += 1024) {
    const n = Math.min(count, start + 1024) - start;
    const probs = tf.tidy(() => {
      let x: Tensor = tf.tensor2d(features.subarray(start * dim, (start + n) * dim), [n, dim]);
      for (const l of tensors) {
        const z = tf.add(tf.matMul(x, l.kernel), l.bias);
        x = l.activation === 'relu' ? tf.relu(z) : tf.softmax(z);
      }
      return x;
    });
    out.set(probs.dataSync(), start * classes);
    probs.dispose();
  }
  tf.dispose(tensors.flatMap((t) => [t.kernel, t.bias]));
  return out;
}
