/**
 * The streaming solver: L2-regularised multinomial logistic regression (the probe's objective, mean cross-entropy +
 * λ/2·‖W‖²) by mini-batch SGD on onnxruntime, over rows that arrive from a stream and are never all in memory. The
 * optimiser state lives in the graph's state buffers (OrtWideTrainer), as in fitHeadOrt.
 *
 * The schedule needs no sweep because the problem is convex and the start is already close: the head is
 * warm-started from the probe fitted on a subsample at the same C, and the step is set from the loss's curvature
 * rather than searched. The softmax cross-entropy's Hessian is at most ½·λmax(E[x̃x̃ᵀ]) + λ = L (diag(p) − ppᵀ ≤ ½I;
 * x̃ is the row with its ones column), measured by power iteration on the subsample; one row's is at most
 * ½·‖x̃‖² + λ, whose largest value L_max bounds what a single row can do. A mini-batch of b rows has the expected
 * smoothness L_b = L + (L_max − L)·(n − b)/(b·(n − 1)) (Gower et al., "SGD: general analysis and improved rates",
 * ICML 2019, b-nice sampling), and lr/(1 − μ) = 1/L_b is the effective step for heavy-ball SGD. 1/L alone, the
 * full-batch step, was 17 times too long at batch 32: one epoch from the warm start made it worse (val 0.957 from
 * 0.966 at 10 k × 2048 × 100, where the probe reaches 0.992), and three epochs ended 38 % above the optimum's
 * objective with the warm start forgotten. The step then decays linearly to zero over all steps, the schedule
 * that needs no tuning for SGD on convex problems (Defazio et al., "When, why and how much? Adaptive learning rate
 * scheduling by refinement", 2023). Rows are centred inside the solver (an exact reparametrisation: the bias absorbs the centre
 * at the end): post-ReLU features share a large mean direction, and uncentred they make the problem so
 * ill-conditioned that SGD crawls along every other direction (measured: 0.912 vs the optimum's 0.806 after six
 * epochs uncentred). The bias is decayed with the kernel (the graph has one
 * augmented kernel); λ = 1/(C·n) is small at the row counts this runs at, so the difference to scikit-learn's
 * unpenalised intercept is negligible there.
 */
import { ExitCode, FeatcacheError } from '../../errors.js';
import type { RowBatch } from '../../store/stream.js';
import { type StepBatch, OrtWideTrainer, type WideState } from './ort-engine.js';
import { type Normalization, applyNormalization } from '../normalize.js';

/** Heavy-ball momentum of the streaming solver (PyTorch semantics). */
export const STREAM_MOMENTUM = 0.9;
/** The largest batch: it keeps the matMuls at sgemm speed. */
export const STREAM_BATCH = 512;

/**
 * Rows per step for `rows` rows: about rows/500 (a power of two in 32..512), so an epoch has several hundred steps
 * however small the split; large splits get large batches, which run at sgemm speed and need no more steps.
 */
export function streamBatchSize(rows: number): number {
  return Math.min(STREAM_BATCH, Math.max(32, 2 ** Math.round(Math.log2(Math.max(1, rows / 500)))));
}
/** Optimiser steps per onnxruntime run (one round trip of the state per group; see fitHeadOrt's STEPS_PER_RUN). */
const STEPS_PER_RUN = 4;

/** Where a stream's rows come from: one pass per epoch, shuffled afresh each time. */
export type RowSource = (epoch: number) => AsyncIterable<RowBatch>;

export interface StreamFitOptions {
  dim: number;
  classes: number;
  /** Applied to each batch as it arrives (the saved head's normalisation). */
  normalization: Normalization;
  /** L2 strength on the mean loss: l2Strength(C, rows, classes). */
  lambda: number;
  epochs: number;
  /** Labelled rows one epoch yields (the schedule runs over epochs × rows). */
  rowsPerEpoch: number;
  /** The normalised rows' mean (subtracted inside the solver; the returned bias accounts for it). */
  center: Float32Array;
  /** λmax of the centred rows' covariance (`curvature`). */
  curvature: number;
  /** The largest squared norm of a centred row (`maxCentredNorm`): what bounds one row's curvature. */
  maxRowNorm: number;
  /** Per-class loss weights (1 for every class without class weighting). */
  classWeights: Float32Array;
  init: WideState;
  batchSize?: number;
  momentum?: number;
  onProgress?: (epoch: number, rowsDone: number) => void;
  signal?: AbortSignal;
}

export interface StreamEpoch {
  epoch: number;
  lr: number;
  /** Mean weighted cross-entropy of the pre-update logits over the epoch (without the penalty). */
  trainLoss: number;
  trainAcc: number;
  seconds: number;
  rowsPerSecond: number;
}

export interface StreamFitResult {
  kernel: Float32Array;
  bias: Float32Array;
  history: StreamEpoch[];
  /** The base step size the curvature bound gave. */
  lr: number;
}

/** What sets the step: the rows' geometry, the batch, the split's size and the penalty. */
export interface StepGeometry {
  /** λmax of the centred rows' covariance. */
  curvature: number;
  /** The largest squared norm of a centred row (the bias column adds `curvature` to it: see fitStreaming). */
  maxRowNorm: number;
  batch: number;
  rows: number;
  lambda: number;
}

/**
 * The base learning rate: effective step 1/L_b, the mini-batch's expected smoothness (see the module comment), scaled
 * by (1 − μ) for momentum.
 */
export function streamLearningRate(g: StepGeometry, momentum = STREAM_MOMENTUM): number {
  const full = 0.5 * g.curvature + g.lambda;
  const single = Math.max(full, 0.5 * (g.maxRowNorm + g.curvature) + g.lambda);
  const b = Math.max(1, Math.min(g.batch, g.rows));
  const batch = g.rows > 1 ? full + ((single - full) * (g.rows - b)) / (b * (g.rows - 1)) : single;
  return (1 - momentum) / batch;
}

/** The largest ‖x − center‖² among `count` rows. */
export function maxCentredNorm(features: Float32Array, count: number, dim: number, center: Float32Array): number {
  let largest = 0;
  for (let r = 0; r < count; r++) {
    let s = 0;
    for (let d = 0; d < dim; d++) s += (features[r * dim + d]! - center[d]!) ** 2;
    largest = Math.max(largest, s);
  }
  return largest;
}

/** λmax of the covariance of rows centred on `center`, by power iteration (it only sets a step size). */
export function curvature(
  features: Float32Array,
  count: number,
  dim: number,
  center: Float32Array,
  iterations = 30,
): number {
  if (count === 0) return 1;
  let v = Float64Array.from({ length: dim }, (_, d) => 1 + ((d * 7919) % 13) / 13);
  let lambda = 0;
  const xv = new Float64Array(count);
  for (let it = 0; it < iterations; it++) {
    const norm = Math.hypot(...v) || 1;
    v = v.map((x) => x / norm);
    for (let r = 0; r < count; r++) {
      let s = 0;
      for (let d = 0; d < dim; d++) s += (features[r * dim + d]! - center[d]!) * v[d]!;
      xv[r] = s;
    }
    const u = new Float64Array(dim);
    for (let r = 0; r < count; r++) {
      const a = xv[r]! / count;
      for (let d = 0; d < dim; d++) u[d]! += (features[r * dim + d]! - center[d]!) * a;
    }
    lambda = Math.hypot(...u);
    v = u;
  }
  return lambda > 0 ? lambda : 1;
}

/** Row mean of `count` rows. */
export function rowMean(features: Float32Array, count: number, dim: number): Float32Array {
  const sum = new Float64Array(dim);
  for (let r = 0; r < count; r++) for (let d = 0; d < dim; d++) sum[d]! += features[r * dim + d]!;
  return Float32Array.from(sum, (s) => s / Math.max(1, count));
}

/** μᵀW per class: what moves between the bias and the centre. */
function centreShift(center: Float32Array, kernel: Float32Array, dim: number, classes: number): Float64Array {
  const shift = new Float64Array(classes);
  for (let d = 0; d < dim; d++) for (let c = 0; c < classes; c++) shift[c]! += center[d]! * kernel[d * classes + c]!;
  return shift;
}

function centre(features: Float32Array, count: number, dim: number, center: Float32Array): void {
  for (let r = 0; r < count; r++) for (let d = 0; d < dim; d++) features[r * dim + d]! -= center[d]!;
}

/** Iterates are averaged over this last share of the steps (Polyak–Ruppert tail averaging). */
const AVERAGE_FROM = 0.5;

/** A running mean of the iterates, in float64, weighted by steps. */
class IterateAverage {
  private readonly kernel: Float64Array;
  private readonly bias: Float64Array;
  count = 0;
  constructor(dim: number, classes: number) {
    this.kernel = new Float64Array(dim * classes);
    this.bias = new Float64Array(classes);
  }
  add(kernel: Float32Array, bias: Float32Array, weight: number): void {
    this.count += weight;
    const f = weight / this.count;
    for (let i = 0; i < kernel.length; i++) this.kernel[i]! += (kernel[i]! - this.kernel[i]!) * f;
    for (let i = 0; i < bias.length; i++) this.bias[i]! += (bias[i]! - this.bias[i]!) * f;
  }
  result(): { kernel: Float32Array; bias: Float32Array } {
    return { kernel: Float32Array.from(this.kernel), bias: Float32Array.from(this.bias) };
  }
}

/** Thrown when the signal aborts a fit: the caller has written nothing yet. */
export class FitInterrupted extends FeatcacheError {
  constructor() {
    super('train-head: interrupted; nothing was written (the previous head, if any, is intact)', ExitCode.interrupted);
  }
}

interface Buffers {
  x: Float32Array;
  target: Float32Array;
  scale: Float32Array;
  labels: Int32Array;
}

/** Fills batch buffers with rows [start, start + n) of `b`; returns Σw. */
function fill(
  buf: Buffers,
  b: RowBatch,
  start: number,
  n: number,
  dim: number,
  classes: number,
  weights: Float32Array,
): number {
  let weightSum = 0;
  for (let i = 0; i < n; i++) weightSum += weights[b.labels[start + i]!]!;
  buf.target.fill(0, 0, n * classes);
  for (let i = 0; i < n; i++) {
    const label = b.labels[start + i]!;
    buf.x.set(b.features.subarray((start + i) * dim, (start + i + 1) * dim), i * (dim + 1));
    buf.scale[i] = Math.fround(weights[label]!) / Math.fround(weightSum);
    buf.target[i * classes + label] = buf.scale[i]!;
    buf.labels[i] = label;
  }
  return weightSum;
}

/**
 * Fits the linear head on the streamed rows; deterministic for a deterministic source. Rows with a negative label
 * must already be filtered out by the source.
 */
export async function fitStreaming(source: RowSource, o: StreamFitOptions): Promise<StreamFitResult> {
  const { dim, classes } = o;
  const batchSize = o.batchSize ?? streamBatchSize(o.rowsPerEpoch);
  const momentum = o.momentum ?? STREAM_MOMENTUM;
  const lr0 = streamLearningRate(
    {
      curvature: o.curvature,
      maxRowNorm: o.maxRowNorm,
      batch: batchSize,
      rows: o.rowsPerEpoch,
      lambda: o.lambda,
    },
    momentum,
  );
  // Centred coordinates: x·W + b = (x − μ)·W + (b + μᵀW). The bias's input column is √λmax instead of 1 (and the
  // bias parameter b/√λmax), so the bias is no stiffer than the features' stiffest direction and does not cap the step.
  const biasInput = Math.sqrt(o.curvature);
  const shift = centreShift(o.center, o.init.kernel, dim, classes);
  const init = {
    kernel: o.init.kernel,
    bias: Float32Array.from(o.init.bias, (b, c) => (b + shift[c]!) / biasInput),
  };
  const trainer = await OrtWideTrainer.create(dim, classes, 1, { optimizer: 'sgd', momentum }, init, {
    weightDecay: o.lambda > 0,
    stats: true,
  });
  try {
    const buffers: Buffers[] = Array.from({ length: STEPS_PER_RUN }, () => ({
      x: trainer.batchBuffer(batchSize).map((v, i) => (i % (dim + 1) === dim ? biasInput : v)),
      target: new Float32Array(batchSize * classes),
      scale: new Float32Array(batchSize),
      labels: new Int32Array(batchSize),
    }));
    const wd = new Float32Array(classes).fill(o.lambda);
    const totalRows = Math.max(1, o.epochs * o.rowsPerEpoch);
    const lr = new Float32Array(classes);
    const history: StreamEpoch[] = [];
    const average = new IterateAverage(dim, classes);
    let seen = 0;
    for (let epoch = 0; epoch < o.epochs; epoch++) {
      const started = performance.now();
      let [lossSum, weightTotal, correct, rows] = [0, 0, 0, 0];
      const lrAtStart = lr0 * (1 - seen / totalRows);
      for await (const batch of source(epoch)) {
        if (o.signal?.aborted) throw new FitInterrupted();
        applyNormalization(o.normalization, batch.features, batch.count, dim);
        centre(batch.features, batch.count, dim, o.center);
        for (let start = 0; start < batch.count;) {
          const full = Math.floor((batch.count - start) / batchSize);
          const steps = full > 0 ? Math.min(full, STEPS_PER_RUN) : 1;
          const n = full > 0 ? batchSize : batch.count - start;
          // Linear decay to zero, evaluated at the group's middle so no step has lr = 0.
          lr.fill(lr0 * Math.max(1e-6, 1 - (seen + (steps * n) / 2) / totalRows));
          const sums: number[] = [];
          const group: StepBatch[] = buffers.slice(0, steps).map((buf, s) => {
            sums.push(fill(buf, batch, start + s * n, n, dim, classes, o.classWeights));
            return {
              x: buf.x.subarray(0, n * (dim + 1)),
              n,
              target: buf.target.subarray(0, n * classes),
              scale: buf.scale.subarray(0, n),
              labels: buf.labels.subarray(0, n),
            };
          });
          const stats = await trainer.stepMany(group, lr, wd);
          if (seen + (steps * n) / 2 >= totalRows * AVERAGE_FROM) {
            const w = trainer.weights();
            average.add(w.kernel, w.bias, steps);
          }
          stats.forEach((st, s) => {
            lossSum += st.loss * sums[s]!;
            weightTotal += sums[s]!;
            correct += st.correct;
          });
          start += steps * n;
          seen += steps * n;
          rows += steps * n;
        }
        o.onProgress?.(epoch, rows);
      }
      const seconds = (performance.now() - started) / 1000;
      history.push({
        epoch: epoch + 1,
        lr: lrAtStart,
        trainLoss: weightTotal > 0 ? lossSum / weightTotal : NaN,
        trainAcc: rows > 0 ? correct / rows : NaN,
        seconds,
        rowsPerSecond: rows / seconds,
      });
    }
    const w = average.count > 0 ? average.result() : trainer.weights();
    const back = centreShift(o.center, w.kernel, dim, classes);
    return {
      kernel: w.kernel,
      bias: Float32Array.from(w.bias, (b, c) => b * biasInput - back[c]!),
      history,
      lr: lr0,
    };
  } finally {
    await trainer.dispose();
  }
}

/** Logits of streamed rows under a linear head, chunk by chunk (rows normalised in place first). */
export async function streamLogits(
  rows: AsyncIterable<RowBatch>,
  head: { kernel: Float32Array; bias: Float32Array; normalization: Normalization },
  dim: number,
  classes: number,
  onBatch: (batch: RowBatch, logits: Float32Array) => void,
): Promise<void> {
  const trainer = await OrtWideTrainer.create(
    dim,
    classes,
    1,
    { optimizer: 'sgd', momentum: 0 },
    { kernel: head.kernel, bias: head.bias },
    { weightDecay: false },
  );
  try {
    for await (const batch of rows) {
      applyNormalization(head.normalization, batch.features, batch.count, dim);
      onBatch(batch, (await trainer.logits(batch.features, batch.count)).slice());
    }
  } finally {
    await trainer.dispose();
  }
}
