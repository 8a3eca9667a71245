/**
 * `fitHead` for a linear head on onnxruntime: the fallback path's engine where tfjs-node is absent (the wasm
 * backend reaches ~5–15 GFLOP/s on this step; onnxruntime's MLAS runs its matMuls at the machine's sgemm peak).
 * Same contract and the same run as `fitHead`: the seeded PRNG draws the kernel, then the bias, then one shuffle
 * per epoch, in that order; StepLR, class weights, per-epoch history, best-validation restore and patience follow
 * train.ts. The result is DenseWeights, saved as the usual TF.js LayersModel.
 */
import { FeatcacheError } from '../../errors.js';
import { seededRandom, shuffled } from '../../util/random.js';
import { OrtWideTrainer } from './ort-engine.js';
import {
  type DenseWeights,
  type EpochStats,
  type HeadOptions,
  type Split,
  classWeightsFor,
  validateData,
  validateHeadOptions,
} from '../model.js';
import { type FitControl, type TrainResult, epochRecord, initValues, monitorScore, stepLr } from './train.js';

/**
 * Mini-batches per onnxruntime run (an unrolled graph): the state's round trip through JS and the run's fixed cost
 * are paid once per group. Measured (2048 → 120, SGD momentum, 2 cores): batch 256 gains ~15% from 1 to 8 steps,
 * batch 32 ~45%; most of it by 4. The group's batch buffers are capped at GROUP_BYTES.
 */
export const STEPS_PER_RUN = 8;
const GROUP_BYTES = 64 * 1024 * 1024;

/** Preallocated batch buffers, refilled each step: nothing of the batch's size is allocated per step. */
interface BatchBuffers {
  x: Float32Array;
  target: Float32Array;
  scale: Float32Array;
  labels: Int32Array;
}

function batchBuffers(trainer: OrtWideTrainer, rows: number, classes: number): BatchBuffers {
  return {
    x: trainer.batchBuffer(rows),
    target: new Float32Array(rows * classes),
    scale: new Float32Array(rows),
    labels: new Int32Array(rows),
  };
}

/** Gathers rows order[start..start+n) into `b`; returns Σw of the batch. */
function gather(
  b: BatchBuffers,
  split: Split,
  dim: number,
  classes: number,
  classWeights: Float32Array,
  order: Int32Array,
  start: number,
  n: number,
): number {
  let weightSum = 0;
  for (let i = 0; i < n; i++) weightSum += classWeights[split.labels[order[start + i]!]!]!;
  b.target.fill(0, 0, n * classes);
  for (let i = 0; i < n; i++) {
    const row = order[start + i]!;
    const label = split.labels[row]!;
    b.x.set(split.features.subarray(row * dim, (row + 1) * dim), i * (dim + 1));
    // Rounded once to float32, as tfjs's w_i / Σw on the device.
    b.scale[i] = Math.fround(classWeights[label]!) / Math.fround(weightSum);
    b.target[i * classes + label] = b.scale[i]!;
    b.labels[i] = label;
  }
  return weightSum;
}

interface EpochContext {
  trainer: OrtWideTrainer;
  buffers: BatchBuffers[];
  train: Split;
  dim: number;
  classes: number;
  classWeights: Float32Array;
  batchSize: number;
}

/** One pass over `train`: mean weighted loss and accuracy of the pre-update logits, as fitHead's runEpoch. */
async function runEpoch(c: EpochContext, order: Int32Array, lr: Float32Array, wd: Float32Array) {
  const { train, dim, classes, batchSize } = c;
  let [lossSum, weightTotal, correct] = [0, 0, 0];
  for (let start = 0; start < train.count;) {
    // A group of full batches shares one run; the short last batch has its own shape and runs alone.
    const full = Math.floor((train.count - start) / batchSize);
    const steps = full > 0 ? Math.min(full, c.buffers.length) : 1;
    const n = full > 0 ? batchSize : train.count - start;
    const weightSums: number[] = [];
    const batches = c.buffers.slice(0, steps).map((b, s) => {
      weightSums.push(gather(b, train, dim, classes, c.classWeights, order, start + s * n, n));
      return {
        x: b.x.subarray(0, n * (dim + 1)),
        n,
        target: b.target.subarray(0, n * classes),
        scale: b.scale.subarray(0, n),
        labels: b.labels.subarray(0, n),
      };
    });
    const stats = await c.trainer.stepMany(batches, lr, wd);
    stats.forEach((st, s) => {
      // The graph returns Σ s_i·CE_i with s_i = w_i/Σw; fitHead sums w_i·CE_i and Σw over the epoch.
      lossSum += st.loss * weightSums[s]!;
      weightTotal += weightSums[s]!;
      correct += st.correct;
    });
    start += steps * n;
  }
  return { loss: lossSum / weightTotal, acc: correct / train.count };
}

/** Unweighted mean cross-entropy and accuracy, as fitHead's evaluate. */
async function evaluate(trainer: OrtWideTrainer, split: Split, dim: number) {
  let [lossSum, correct] = [0, 0];
  // Chunks bound the logits' memory on large validation splits.
  for (let start = 0; start < split.count; start += 8192) {
    const n = Math.min(split.count, start + 8192) - start;
    const r = await trainer.evaluate(
      split.features.subarray(start * dim, (start + n) * dim),
      n,
      split.labels.subarray(start, start + n),
    );
    lossSum += r.lossSum;
    correct += r.correct;
  }
  return { loss: lossSum / split.count, acc: correct / split.count };
}

/**
 * Trains one linear head with onnxruntime: fitHead's contract for `hidden` = 0 (a hidden layer throws; the caller
 * trains it with tfjs). Same seed, same data → the same weights as fitHead up to float rounding, and byte-identical
 * across runs on one machine.
 */
export async function fitHeadOrt(
  train: Split,
  val: Split | null,
  dim: number,
  classes: number,
  options: HeadOptions,
  control: FitControl = {},
): Promise<TrainResult> {
  validateHeadOptions(options);
  validateData(train, dim, classes);
  if (options.hidden > 0)
    throw new FeatcacheError(
      `train-head: the onnxruntime engine trains linear heads only (hidden = ${options.hidden}); train this head with tfjs`,
    );
  const selectOnVal = control.selectOnVal ?? true;
  const random = seededRandom(options.seed);
  // fitHead's draw order: the kernel, then the bias.
  const kernel = initValues(dim * classes, dim, random);
  const bias = initValues(classes, dim, random);
  const trainer = await OrtWideTrainer.create(
    dim,
    classes,
    1,
    options,
    { kernel, bias },
    { weightDecay: options.weightDecay > 0, stats: true },
  );
  try {
    const classWeights = classWeightsFor(options, train.labels, classes);
    const rows = Math.min(options.batchSize, train.count);
    const group = Math.max(1, Math.min(STEPS_PER_RUN, Math.floor(GROUP_BYTES / (rows * (dim + 1) * 4))));
    const context: EpochContext = {
      trainer,
      buffers: Array.from({ length: group }, () => batchBuffers(trainer, rows, classes)),
      train,
      dim,
      classes,
      classWeights,
      batchSize: options.batchSize,
    };
    const wd = new Float32Array(classes).fill(options.weightDecay);
    const history: EpochStats[] = [];
    let best: { epoch: number; score: number; weights: { kernel: Float32Array; bias: Float32Array } } | null = null;
    let sinceBest = 0;
    let stoppedEarly = false;
    const started = performance.now();
    for (let epoch = 0; epoch < options.epochs; epoch++) {
      const epochStarted = performance.now();
      const lr = stepLr(options, epoch);
      const fit = await runEpoch(context, shuffled(train.count, random), new Float32Array(classes).fill(lr), wd);
      const valStats = val && val.count > 0 ? await evaluate(trainer, val, dim) : null;
      const stats = epochRecord(epoch, lr, fit, valStats, epochStarted);
      history.push(stats);
      control.onEpoch?.(stats);
      if (valStats && selectOnVal) {
        const score = monitorScore(options, valStats);
        // Higher is better; ties keep the earlier epoch, as BestWeightsKeeper does.
        if (!best || score > best.score)
          [best, sinceBest] = [{ epoch: epoch + 1, score, weights: trainer.weights() }, 0];
        else sinceBest++;
        if (options.patience > 0 && sinceBest >= options.patience) {
          stoppedEarly = epoch + 1 < options.epochs;
          break;
        }
      }
    }
    const secondsPerEpoch = (performance.now() - started) / 1000 / history.length;
    const kept = best?.weights ?? trainer.weights();
    const layer: DenseWeights = { kernel: kept.kernel, shape: [dim, classes], bias: kept.bias, activation: 'softmax' };
    return { layers: [layer], history, bestEpoch: best?.epoch ?? history.length, stoppedEarly, secondsPerEpoch };
  } finally {
    await trainer.dispose();
  }
}
