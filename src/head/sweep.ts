/**
 * The hyperparameter sweep: many (learning rate, weight decay) settings trained side by side in one pass. For a
 * linear head the K candidates' kernels sit next to each other as one [dim, K·classes] matrix, so each mini-batch
 * costs one wide matMul forward and one backward for all of them (the DINOv2 linear-evaluation trick); a per-column
 * learning-rate and weight-decay row keeps the candidates independent. Every candidate starts from the same seeded
 * initialisation and sees the same shuffles as `fitHead` with that setting would, so a chosen candidate can be
 * reproduced (and refit) by `fitHead` alone.
 */
import { seededRandom, shuffled } from '../util/random.js';
import { OrtWideTrainer } from './ort-engine.js';
import type { Tf } from './runtime.js';
import {
  type HeadOptions,
  type Split,
  type Tensor,
  classWeightsFor,
  disposeBatch,
  disposeParam,
  fitHead,
  gatherBatch,
  initValues,
  makeOptimizer,
  makeParam,
  stepLr,
} from './train.js';
import type { SweepEngine } from './sweep-grid.js';

export interface LrWd {
  lr: number;
  weightDecay: number;
}

/** Held-out mean cross-entropy and accuracy per epoch (rows) and candidate (columns). */
export interface SweepCurves {
  loss: Float64Array[];
  acc: Float64Array[];
  /** Multiply-adds × 2 of the training matMuls, for GFLOP/s. */
  flops: number;
  seconds: number;
  /** Held-out logits [rows, K·classes] per epoch, when the engine kept them (onnxruntime, within a memory cap). */
  heldLogits?: Float32Array[];
}

/** Held-out logits are kept for every epoch up to this many floats (256 MB); beyond it finalists are refit. */
export const KEEP_LOGITS_MAX = 64 * 1024 * 1024;

export { SWEEP_ENGINES, type SweepEngine } from './sweep-grid.js';

export interface SweepRunOptions {
  /** Stop when no candidate improved its held-out loss for this many epochs (0 = never). */
  patience: number;
  engine?: Exclude<SweepEngine, 'auto'>;
}

/** Runs every candidate for up to `options.epochs` epochs on `fit`, scoring each epoch on `holdout`. */
/** @internal */
export async function sweepCurves(
  tf: Tf,
  fit: Split,
  holdout: Split,
  dim: number,
  classes: number,
  candidates: LrWd[],
  options: HeadOptions,
  run: SweepRunOptions,
): Promise<SweepCurves> {
  if (options.hidden > 0) return sequentialCurves(tf, fit, holdout, dim, classes, candidates, options);
  if (run.engine === 'onnxruntime')
    return (await ortWide(fit, holdout, dim, classes, candidates, options, { ...run, scoreEachEpoch: true })).curves;
  return wideCurves(tf, fit, holdout, dim, classes, candidates, options, run);
}

/** Held-out logits [rows, classes] of one linear setting trained for `options.epochs` epochs with onnxruntime. */
export async function ortHeldOutLogits(
  fit: Split,
  holdout: Split,
  dim: number,
  classes: number,
  options: HeadOptions,
): Promise<Float32Array> {
  return (
    await ortWide(fit, holdout, dim, classes, [{ lr: options.lr, weightDecay: options.weightDecay }], options, {
      patience: 0,
      scoreEachEpoch: false,
    })
  ).finalLogits;
}

/** Mean cross-entropy and accuracy per candidate from held-out logits [n, K·classes]. */
function scoreLogits(
  logits: Float32Array,
  labels: Int32Array,
  k: number,
  classes: number,
): { loss: Float64Array; acc: Float64Array } {
  const loss = new Float64Array(k);
  const acc = new Float64Array(k);
  const n = labels.length;
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) {
      const o = (r * k + c) * classes;
      let [max, arg] = [-Infinity, 0];
      for (let j = 0; j < classes; j++) if (logits[o + j]! > max) [max, arg] = [logits[o + j]!, j];
      let sum = 0;
      for (let j = 0; j < classes; j++) sum += Math.exp(logits[o + j]! - max);
      loss[c]! += (max + Math.log(sum) - logits[o + labels[r]!]!) / n;
      if (arg === labels[r]) acc[c]! += 1 / n;
    }
  }
  return { loss, acc };
}

async function ortWide(
  fit: Split,
  holdout: Split,
  dim: number,
  classes: number,
  candidates: LrWd[],
  options: HeadOptions,
  run: SweepRunOptions & { scoreEachEpoch: boolean },
) {
  const started = performance.now();
  const k = candidates.length;
  const wide = k * classes;
  const random = seededRandom(options.seed);
  const init = {
    kernel: tile(initValues(dim * classes, dim, random), dim, classes, k),
    bias: tile(initValues(classes, dim, random), 1, classes, k),
  };
  const trainer = await OrtWideTrainer.create(dim, classes, k, options, init);
  const perColumn = (f: (c: LrWd) => number) =>
    Float32Array.from({ length: wide }, (_, j) => f(candidates[Math.floor(j / classes)]!));
  const [lrRow, wdRow] = [perColumn((c) => c.lr), perColumn((c) => c.weightDecay)];
  const classWeights = classWeightsFor(options, fit.labels, classes);
  const loss: Float64Array[] = [];
  const acc: Float64Array[] = [];
  const bestLoss = new Float64Array(k).fill(Infinity);
  let sinceImproved = 0;
  const keep = holdout.count * wide * options.epochs <= KEEP_LOGITS_MAX;
  const heldLogits: Float32Array[] = [];
  try {
    for (let epoch = 0; epoch < options.epochs; epoch++) {
      const factor = stepLr({ ...options, lr: 1 }, epoch);
      const lr = lrRow.map((v) => v * factor);
      // The epoch's held-out logits come out of its last step's run.
      let logits: Float32Array = new Float32Array();
      const order = shuffled(fit.count, random);
      for (let start = 0; start < fit.count; start += options.batchSize) {
        const n = Math.min(fit.count, start + options.batchSize) - start;
        const x = new Float32Array(n * dim);
        const target = new Float32Array(n * classes);
        const scale = new Float32Array(n);
        let weightSum = 0;
        for (let i = 0; i < n; i++) weightSum += classWeights[fit.labels[order[start + i]!]!]!;
        for (let i = 0; i < n; i++) {
          const row = order[start + i]!;
          x.set(fit.features.subarray(row * dim, (row + 1) * dim), i * dim);
          scale[i] = classWeights[fit.labels[row]!]! / weightSum;
          target[i * classes + fit.labels[row]!] = scale[i]!;
        }
        const last = start + options.batchSize >= fit.count;
        const scored = await trainer.stepBatch(
          x,
          n,
          target,
          scale,
          lr,
          wdRow,
          run.scoreEachEpoch && last ? { x: holdout.features, n: holdout.count } : undefined,
        );
        if (scored) logits = scored;
      }
      if (!run.scoreEachEpoch) continue;
      if (keep) heldLogits.push(logits);
      const scores = scoreLogits(logits, holdout.labels, k, classes);
      loss.push(scores.loss);
      acc.push(scores.acc);
      let improved = false;
      scores.loss.forEach((v, c) => {
        if (v < bestLoss[c]!) [bestLoss[c], improved] = [v, true];
      });
      sinceImproved = improved ? 0 : sinceImproved + 1;
      if (run.patience > 0 && sinceImproved >= run.patience) break;
    }
    const finalLogits = run.scoreEachEpoch ? new Float32Array() : await trainer.logits(holdout.features, holdout.count);
    const epochs = run.scoreEachEpoch ? loss.length : options.epochs;
    const curves: SweepCurves = {
      loss,
      acc,
      flops: 4 * fit.count * dim * wide * epochs,
      seconds: (performance.now() - started) / 1000,
      ...(keep && run.scoreEachEpoch ? { heldLogits } : {}),
    };
    return { curves, finalLogits };
  } finally {
    await trainer.dispose();
  }
}

/** A hidden layer has no cheap side-by-side form: its candidates run one after another. */
async function sequentialCurves(
  tf: Tf,
  fit: Split,
  holdout: Split,
  dim: number,
  classes: number,
  candidates: LrWd[],
  options: HeadOptions,
): Promise<SweepCurves> {
  const started = performance.now();
  const runs = candidates.map(
    (c) => fitHead(tf, fit, holdout, dim, classes, { ...options, ...c, patience: 0 }, { selectOnVal: false }).history,
  );
  const epochs = runs[0]!.length;
  const column = (k: 'valLoss' | 'valAcc') =>
    Array.from({ length: epochs }, (_, e) => Float64Array.from(runs, (h) => h[e]![k]!));
  const perEpoch = 2 * fit.count * (dim * options.hidden + options.hidden * classes) * 3;
  return {
    loss: column('valLoss'),
    acc: column('valAcc'),
    flops: perEpoch * epochs * candidates.length,
    seconds: (performance.now() - started) / 1000,
  };
}

function tile(values: Float32Array, rows: number, cols: number, times: number): Float32Array {
  const out = new Float32Array(rows * cols * times);
  for (let r = 0; r < rows; r++)
    for (let k = 0; k < times; k++) out.set(values.subarray(r * cols, (r + 1) * cols), (r * times + k) * cols);
  return out;
}

function wideCurves(
  tf: Tf,
  fit: Split,
  holdout: Split,
  dim: number,
  classes: number,
  candidates: LrWd[],
  options: HeadOptions,
  run: SweepRunOptions,
): SweepCurves {
  const started = performance.now();
  const k = candidates.length;
  const wide = k * classes;
  // Same draws, in the same order, as fitHead's initialisation and shuffles.
  const random = seededRandom(options.seed);
  const kernel = makeParam(tf, tile(initValues(dim * classes, dim, random), dim, classes, k), [dim, wide]);
  const bias = makeParam(tf, tile(initValues(classes, dim, random), 1, classes, k), [wide]);
  const perColumn = (f: (c: LrWd) => number) =>
    tf.tensor1d(Float32Array.from({ length: wide }, (_, j) => f(candidates[Math.floor(j / classes)]!)));
  const lrRow = perColumn((c) => c.lr);
  const wdRow = perColumn((c) => c.weightDecay);
  const optimizer = makeOptimizer(tf, options);
  const classWeights = classWeightsFor(options, fit.labels, classes);
  const ones = new Float32Array(classes).fill(1);
  const holdoutOrder = Int32Array.from({ length: holdout.count }, (_, i) => i);
  const held = gatherBatch(tf, holdout, dim, classes, ones, holdoutOrder, 0, holdout.count);
  const loss: Float64Array[] = [];
  const acc: Float64Array[] = [];
  const bestLoss = new Float64Array(k).fill(Infinity);
  let sinceImproved = 0;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    const lr = tf.mul(lrRow, stepLr({ ...options, lr: 1 }, epoch));
    const order = shuffled(fit.count, random);
    for (let start = 0; start < fit.count; start += options.batchSize) {
      const b = gatherBatch(
        tf,
        fit,
        dim,
        classes,
        classWeights,
        order,
        start,
        Math.min(fit.count, start + options.batchSize),
      );
      tf.tidy(() => {
        optimizer.nextStep();
        const n = b.x.shape[0];
        const logits = tf.reshape(tf.add(tf.matMul(b.x, kernel.value), bias.value), [n, k, classes]);
        const weights = tf.reshape(tf.div(b.weights, tf.sum(b.weights)), [n, 1, 1]);
        const grad3 = tf.mul(tf.sub(tf.exp(tf.logSoftmax(logits)), tf.reshape(b.oneHot, [n, 1, classes])), weights);
        const grad = tf.reshape(grad3, [n, wide]);
        optimizer.update(kernel, tf.matMul(tf.transpose(b.x), grad), lr, wdRow);
        optimizer.update(bias, tf.sum(grad, 0), lr, wdRow);
      });
      disposeBatch(tf, b);
    }
    lr.dispose();
    const [epochLoss, epochAcc] = tf.tidy(() => {
      const n = holdout.count;
      const logits = tf.reshape(tf.add(tf.matMul(held.x, kernel.value), bias.value), [n, k, classes]);
      const l = tf.div(
        tf.neg(tf.sum(tf.mul(tf.logSoftmax(logits), tf.reshape(held.oneHot, [n, 1, classes])), [0, 2])),
        n,
      );
      const a = tf.mean(tf.cast(tf.equal(tf.argMax(logits, 2), tf.reshape(held.labels, [n, 1])), 'float32'), 0);
      return [l, a];
    });
    loss.push(Float64Array.from(epochLoss.dataSync()));
    acc.push(Float64Array.from(epochAcc.dataSync()));
    tf.dispose([epochLoss, epochAcc]);
    let improved = false;
    loss.at(-1)!.forEach((v, c) => {
      if (v < bestLoss[c]!) [bestLoss[c], improved] = [v, true];
    });
    sinceImproved = improved ? 0 : sinceImproved + 1;
    if (run.patience > 0 && sinceImproved >= run.patience) break;
  }
  disposeBatch(tf, held);
  tf.dispose([lrRow, wdRow]);
  disposeParam(tf, kernel);
  disposeParam(tf, bias);
  // Forward and weight-gradient matMuls: 2 × (2·n·dim·wide) per epoch.
  const flops = 4 * fit.count * dim * wide * loss.length;
  return { loss, acc, flops, seconds: (performance.now() - started) / 1000 };
}

/** Mean of fold curves weighted by hold-out size, over the epochs every fold reached. */
export function combineFolds(folds: { curves: SweepCurves; weight: number }[]): SweepCurves {
  const epochs = Math.min(...folds.map((f) => f.curves.loss.length));
  const total = folds.reduce((s, f) => s + f.weight, 0);
  const mean = (key: 'loss' | 'acc') =>
    Array.from({ length: epochs }, (_, e) => {
      const out = new Float64Array(folds[0]!.curves[key][0]!.length);
      for (const f of folds) f.curves[key][e]!.forEach((v, c) => (out[c]! += (v * f.weight) / total));
      return out;
    });
  return {
    loss: mean('loss'),
    acc: mean('acc'),
    flops: folds.reduce((s, f) => s + f.curves.flops, 0),
    seconds: folds.reduce((s, f) => s + f.curves.seconds, 0),
  };
}

/** Best epoch (1-based) of candidate `c`: lowest held-out loss, or highest accuracy (ties: lower loss, then earlier). */
export function bestEpochOf(
  curves: SweepCurves,
  c: number,
  monitor: HeadOptions['monitor'],
  onlyEpoch?: number,
): number {
  if (onlyEpoch !== undefined) return Math.min(onlyEpoch, curves.loss.length);
  let best = 0;
  for (let e = 1; e < curves.loss.length; e++) {
    const [l, a, bl, ba] = [curves.loss[e]![c]!, curves.acc[e]![c]!, curves.loss[best]![c]!, curves.acc[best]![c]!];
    const better = monitor === 'val_acc' ? a > ba || (a === ba && l < bl) : l < bl;
    if (better) best = e;
  }
  return best + 1;
}
