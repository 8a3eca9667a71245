/**
 * Training the head with TensorFlow.js, the fast way. Measured on the wasm backend: `model.fit` spends its time in
 * transposed matMuls and in slicing batches out of a large device tensor (35 ms a slice); the matMuls themselves
 * take ~3 ms. So batches are gathered in JS and uploaded, gradients are written out by hand with one explicit
 * transpose, and weights stay on the device until the end (reading a large tensor back costs ~70 ms).
 *
 * `fitHead` is the low-level trainer (one setting, one run); the job that sweeps, selects and calibrates is
 * `trainHead` in jobs/train-head.ts.
 */
import { seededRandom, shuffled } from '../../util/random.js';
import {
  type DenseWeights,
  type EpochStats,
  type HeadOptions,
  type Split,
  classWeightsFor,
  softmaxRows,
  validateData,
  validateHeadOptions,
} from '../model.js';
import type { Tf } from '../runtime.js';

/** @internal */
export type Tensor = ReturnType<Tf['tensor']>;
type Variable = ReturnType<Tf['variable']>;

/** Adam's constants (PyTorch's defaults). */
export const ADAM = Object.freeze({ beta1: 0.9, beta2: 0.999, epsilon: 1e-8 });

export interface TrainResult {
  layers: DenseWeights[];
  history: EpochStats[];
  /** 1-based epoch whose weights were kept (best on validation, or the last without validation or restore). */
  bestEpoch: number;
  stoppedEarly: boolean;
  secondsPerEpoch: number;
}

export interface FitControl {
  onEpoch?: (s: EpochStats) => void;
  /**
   * Keep the best validation epoch's weights and stop early on `patience` (default true). The sweep's refit turns
   * it off: its epoch count was chosen on a hold-out, and the val split it reports on must not select anything.
   */
  selectOnVal?: boolean;
}

/** The scheduler: PyTorch's StepLR, lr × gamma^⌊epoch / stepSize⌋ (0-based epoch). */
export function stepLr(options: Pick<HeadOptions, 'lr' | 'stepSize' | 'gamma'>, epoch: number): number {
  return options.stepSize > 0 ? options.lr * options.gamma ** Math.floor(epoch / options.stepSize) : options.lr;
}

/** A trainable tensor with the optimiser's state beside it. */
/** @internal */
export interface Param {
  value: Variable;
  moment1: Variable;
  moment2: Variable;
}

/**
 * One optimiser step per parameter. `lr` and `weightDecay` may be scalars or tensors broadcast over the parameter
 * (the sweep trains many settings side by side, one per column block).
 */
/** @internal */
export interface Optimizer {
  /** Call once per mini-batch, before the parameters' updates. */
  nextStep(): void;
  update(param: Param, gradient: Tensor, lr: number | Tensor, weightDecay: number | Tensor): void;
}

function withWeightDecay(tf: Tf, param: Param, gradient: Tensor, weightDecay: number | Tensor): Tensor {
  if (typeof weightDecay === 'number' && weightDecay === 0) return gradient;
  return tf.add(gradient, tf.mul(param.value, weightDecay));
}

/** PyTorch's Adam (L2 weight decay added to the gradient, bias-corrected moments). */
/** @internal */
export function adamOptimizer(tf: Tf): Optimizer {
  let step = 0;
  return {
    nextStep: () => void step++,
    update(param, gradient, lr, weightDecay) {
      const { beta1, beta2, epsilon } = ADAM;
      const g = withWeightDecay(tf, param, gradient, weightDecay);
      param.moment1.assign(tf.add(tf.mul(param.moment1, beta1), tf.mul(g, 1 - beta1)));
      param.moment2.assign(tf.add(tf.mul(param.moment2, beta2), tf.mul(tf.square(g), 1 - beta2)));
      const mHat = tf.div(param.moment1, 1 - beta1 ** step);
      const vHat = tf.div(param.moment2, 1 - beta2 ** step);
      param.value.assign(tf.sub(param.value, tf.mul(tf.div(mHat, tf.add(tf.sqrt(vHat), epsilon)), lr)));
    },
  };
}

/** PyTorch's SGD: buf ← μ·buf + g (no dampening), p ← p − lr·buf. */
/** @internal */
export function sgdOptimizer(tf: Tf, momentum: number): Optimizer {
  return {
    nextStep: () => {},
    update(param, gradient, lr, weightDecay) {
      const g = withWeightDecay(tf, param, gradient, weightDecay);
      if (momentum > 0) {
        param.moment1.assign(tf.add(tf.mul(param.moment1, momentum), g));
        param.value.assign(tf.sub(param.value, tf.mul(param.moment1, lr)));
      } else {
        param.value.assign(tf.sub(param.value, tf.mul(g, lr)));
      }
    },
  };
}

/** @internal */
export function makeOptimizer(tf: Tf, options: Pick<HeadOptions, 'optimizer' | 'momentum'>): Optimizer {
  return options.optimizer === 'sgd' ? sgdOptimizer(tf, options.momentum) : adamOptimizer(tf);
}

/** PyTorch nn.Linear's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from the seeded PRNG. */
export function initValues(size: number, fanIn: number, random: () => number): Float32Array {
  const bound = 1 / Math.sqrt(fanIn);
  return Float32Array.from({ length: size }, () => (random() * 2 - 1) * bound);
}

/** @internal */
export function makeParam(tf: Tf, values: Float32Array, shape: number[]): Param {
  return {
    value: tf.variable(tf.tensor(values, shape)),
    moment1: tf.variable(tf.zeros(shape)),
    moment2: tf.variable(tf.zeros(shape)),
  };
}

/** @internal */
export function disposeParam(tf: Tf, p: Param): void {
  tf.dispose([p.value, p.moment1, p.moment2]);
}

interface Layer {
  kernel: Param;
  bias: Param;
}

function initLayers(tf: Tf, sizes: number[], random: () => number): Layer[] {
  const layers: Layer[] = [];
  for (let l = 0; l + 1 < sizes.length; l++) {
    const [fanIn, units] = [sizes[l]!, sizes[l + 1]!];
    layers.push({
      kernel: makeParam(tf, initValues(fanIn * units, fanIn, random), [fanIn, units]),
      bias: makeParam(tf, initValues(units, fanIn, random), [units]),
    });
  }
  return layers;
}

/** Logits and, for the hidden layer, its pre-activation and activation. */
function forward(tf: Tf, layers: Layer[], x: Tensor) {
  if (layers.length === 1)
    return {
      logits: tf.add(tf.matMul(x, layers[0]!.kernel.value), layers[0]!.bias.value),
      hiddenPre: null,
      hidden: null,
    };
  const hiddenPre = tf.add(tf.matMul(x, layers[0]!.kernel.value), layers[0]!.bias.value);
  const hidden = tf.relu(hiddenPre);
  return { logits: tf.add(tf.matMul(hidden, layers[1]!.kernel.value), layers[1]!.bias.value), hiddenPre, hidden };
}

/** @internal */
export interface Batch {
  x: Tensor;
  oneHot: Tensor;
  weights: Tensor;
  labels: Tensor;
}

/** Gathers rows `order[start..end)` in JS and uploads them: cheaper on wasm than slicing a device tensor. */
/** @internal */
export function gatherBatch(
  tf: Tf,
  split: Split,
  dim: number,
  classes: number,
  classWeights: Float32Array,
  order: Int32Array,
  start: number,
  end: number,
): Batch {
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
  return {
    x: tf.tensor2d(x, [n, dim]),
    oneHot: tf.tensor2d(oneHot, [n, classes]),
    weights: tf.tensor1d(weights),
    labels: tf.tensor1d(labels, 'int32'),
  };
}

/** @internal */
export function disposeBatch(tf: Tf, b: Batch): void {
  tf.dispose([b.x, b.oneHot, b.weights, b.labels]);
}

/** One step on a batch; returns [weighted loss sum, weight sum, correct count] as a device tensor. */
function trainStep(
  tf: Tf,
  layers: Layer[],
  optimizer: Optimizer,
  batch: Batch,
  lr: number,
  weightDecay: number,
): Tensor {
  return tf.tidy(() => {
    optimizer.nextStep();
    const { logits, hiddenPre, hidden } = forward(tf, layers, batch.x);
    const logProbs = tf.logSoftmax(logits);
    const weightSum = tf.sum(batch.weights);
    // d(mean weighted CE)/d(logits) = w_i (p_i - y_i) / Σw, PyTorch's CrossEntropyLoss(weight=...) reduction.
    const gradLogits = tf.div(
      tf.mul(tf.sub(tf.exp(logProbs), batch.oneHot), tf.expandDims(batch.weights, 1)),
      weightSum,
    );
    const last = layers[layers.length - 1]!;
    const inputToLast = hidden ?? batch.x;
    // Gradients of every layer are computed from the pre-update weights before any update is applied.
    const gradHidden =
      hidden && hiddenPre ? tf.mul(tf.matMul(gradLogits, tf.transpose(last.kernel.value)), tf.step(hiddenPre)) : null;
    optimizer.update(last.kernel, tf.matMul(tf.transpose(inputToLast), gradLogits), lr, weightDecay);
    optimizer.update(last.bias, tf.sum(gradLogits, 0), lr, weightDecay);
    if (gradHidden) {
      optimizer.update(layers[0]!.kernel, tf.matMul(tf.transpose(batch.x), gradHidden), lr, weightDecay);
      optimizer.update(layers[0]!.bias, tf.sum(gradHidden, 0), lr, weightDecay);
    }
    const lossSum = tf.neg(tf.sum(tf.mul(tf.sum(tf.mul(logProbs, batch.oneHot), 1), batch.weights)));
    const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), batch.labels), 'float32'));
    return tf.stack([lossSum, weightSum, correct]);
  });
}

interface Trainer {
  tf: Tf;
  layers: Layer[];
  dim: number;
  classes: number;
  classWeights: Float32Array;
}

/** One pass over `train` in a seeded order; mean weighted loss and accuracy. */
function runEpoch(
  t: Trainer,
  optimizer: Optimizer,
  train: Split,
  order: Int32Array,
  options: HeadOptions,
  lr: number,
): { loss: number; acc: number } {
  const { tf } = t;
  let totals = tf.zeros([3]);
  for (let start = 0; start < train.count; start += options.batchSize) {
    const batch = gatherBatch(
      tf,
      train,
      t.dim,
      t.classes,
      t.classWeights,
      order,
      start,
      Math.min(train.count, start + options.batchSize),
    );
    const stats = trainStep(tf, t.layers, optimizer, batch, lr, options.weightDecay);
    const next = tf.add(totals, stats);
    tf.dispose([totals, stats]);
    disposeBatch(tf, batch);
    totals = next;
  }
  const [lossSum, weightSum, correct] = totals.dataSync();
  totals.dispose();
  return { loss: lossSum! / weightSum!, acc: correct! / train.count };
}

/** Unweighted mean cross-entropy and accuracy, so validation stays comparable across `classWeight` settings. */
function evaluate(t: Trainer, split: Split): { loss: number; acc: number } {
  const { tf } = t;
  const order = Int32Array.from({ length: split.count }, (_, i) => i);
  const ones = new Float32Array(t.classes).fill(1);
  let totals = tf.zeros([3]);
  for (let start = 0; start < split.count; start += 1024) {
    const b = gatherBatch(tf, split, t.dim, t.classes, ones, order, start, Math.min(split.count, start + 1024));
    const next = tf.tidy(() => {
      const logits = forward(tf, t.layers, b.x).logits;
      const lossSum = tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), b.oneHot)));
      const correct = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), b.labels), 'float32'));
      return tf.add(totals, tf.stack([lossSum, tf.scalar(b.x.shape[0]), correct]));
    });
    tf.dispose(totals);
    disposeBatch(tf, b);
    totals = next;
  }
  const [lossSum, n, correct] = totals.dataSync();
  totals.dispose();
  return { loss: lossSum! / n!, acc: correct! / n! };
}

/** Keeps a copy of the weights of the best epoch so far and counts epochs since, for restore and early stopping. */
/** @internal */
export class BestWeightsKeeper {
  private best: { epoch: number; score: number; values: Tensor[] } | null = null;
  private sinceBest = 0;
  constructor(private readonly tf: Tf) {}
  /** Higher score is better; ties keep the earlier epoch, like the seeds' `>`. Returns epochs since the best. */
  offer(epoch: number, score: number, current: Tensor[]): number {
    if (!this.best || score > this.best.score) {
      if (this.best) this.tf.dispose(this.best.values);
      this.best = { epoch, score, values: current.map((v) => this.tf.clone(v)) };
      this.sinceBest = 0;
    } else {
      this.sinceBest++;
    }
    return this.sinceBest;
  }
  get epoch(): number | null {
    return this.best?.epoch ?? null;
  }
  values(): Tensor[] | null {
    return this.best?.values ?? null;
  }
  dispose(): void {
    if (this.best) this.tf.dispose(this.best.values);
    this.best = null;
  }
}

function readLayers(layers: Layer[], values: Tensor[], sizes: number[]): DenseWeights[] {
  return layers.map((_, l) => ({
    kernel: values[2 * l]!.dataSync() as Float32Array,
    shape: [sizes[l]!, sizes[l + 1]!],
    bias: values[2 * l + 1]!.dataSync() as Float32Array,
    activation: l + 1 === layers.length ? 'softmax' : 'relu',
  }));
}

/** One epoch's line of the history (0-based `epoch`), timed from `started` (performance.now()). */
export function epochRecord(
  epoch: number,
  lr: number,
  fit: { loss: number; acc: number },
  val: { loss: number; acc: number } | null,
  started: number,
): EpochStats {
  return {
    epoch: epoch + 1,
    lr,
    trainLoss: fit.loss,
    trainAcc: fit.acc,
    valLoss: val?.loss ?? null,
    valAcc: val?.acc ?? null,
    seconds: (performance.now() - started) / 1000,
  };
}

/** What best-epoch restore maximises: accuracy, or the negated loss. */
export function monitorScore(options: Pick<HeadOptions, 'monitor'>, val: { loss: number; acc: number }): number {
  return options.monitor === 'val_acc' ? val.acc : -val.loss;
}

/** Trains one head with one setting: seeded init and shuffles, best-epoch restore on `val`, early stopping. */
/** @internal */
export function fitHead(
  tf: Tf,
  train: Split,
  val: Split | null,
  dim: number,
  classes: number,
  options: HeadOptions,
  control: FitControl = {},
): TrainResult {
  validateHeadOptions(options);
  validateData(train, dim, classes);
  const selectOnVal = control.selectOnVal ?? true;
  const random = seededRandom(options.seed);
  const sizes = options.hidden > 0 ? [dim, options.hidden, classes] : [dim, classes];
  const trainer: Trainer = {
    tf,
    layers: initLayers(tf, sizes, random),
    dim,
    classes,
    classWeights: classWeightsFor(options, train.labels, classes),
  };
  const optimizer = makeOptimizer(tf, options);
  const keeper = new BestWeightsKeeper(tf);
  const current = () => trainer.layers.flatMap((p) => [p.kernel.value, p.bias.value]);
  const history: EpochStats[] = [];
  let stoppedEarly = false;
  const started = performance.now();
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    const epochStarted = performance.now();
    const lr = stepLr(options, epoch);
    const fit = runEpoch(trainer, optimizer, train, shuffled(train.count, random), options, lr);
    const valStats = val && val.count > 0 ? evaluate(trainer, val) : null;
    const stats = epochRecord(epoch, lr, fit, valStats, epochStarted);
    history.push(stats);
    control.onEpoch?.(stats);
    if (valStats && selectOnVal) {
      const score = monitorScore(options, valStats);
      const since = keeper.offer(epoch + 1, score, current());
      if (options.patience > 0 && since >= options.patience) {
        stoppedEarly = epoch + 1 < options.epochs;
        break;
      }
    }
  }
  const secondsPerEpoch = (performance.now() - started) / 1000 / history.length;
  const layers = readLayers(trainer.layers, keeper.values() ?? current(), sizes);
  const bestEpoch = keeper.epoch ?? history.length;
  keeper.dispose();
  for (const l of trainer.layers) [l.kernel, l.bias].forEach((p) => disposeParam(tf, p));
  return { layers, history, bestEpoch, stoppedEarly, secondsPerEpoch };
}

/** Logits [count, classes] of trained dense layers (the output layer without its softmax), on the tfjs backend. */
/** @internal */
export function predictLogits(tf: Tf, layers: DenseWeights[], features: Float32Array, count: number): Float32Array {
  const dim = layers[0]!.shape[0];
  const classes = layers.at(-1)!.shape[1];
  const out = new Float32Array(count * classes);
  const tensors = layers.map((l) => ({
    kernel: tf.tensor2d(l.kernel, l.shape),
    bias: tf.tensor1d(l.bias),
    activation: l.activation,
  }));
  for (let start = 0; start < count; start += 1024) {
    const n = Math.min(count, start + 1024) - start;
    const logits = tf.tidy(() => {
      let x: Tensor = tf.tensor2d(features.subarray(start * dim, (start + n) * dim), [n, dim]);
      for (const l of tensors) {
        const z = tf.add(tf.matMul(x, l.kernel), l.bias);
        x = l.activation === 'relu' ? tf.relu(z) : z;
      }
      return x;
    });
    out.set(logits.dataSync(), start * classes);
    logits.dispose();
  }
  tf.dispose(tensors.flatMap((t) => [t.kernel, t.bias]));
  return out;
}

/** Class probabilities [count, classes]: softmax(logits / temperature), temperature 1 by default. */
/** @internal */
export function predictProbabilities(
  tf: Tf,
  layers: DenseWeights[],
  features: Float32Array,
  count: number,
  temperature = 1,
): Float32Array {
  return softmaxRows(predictLogits(tf, layers, features, count), layers.at(-1)!.shape[1], temperature);
}
