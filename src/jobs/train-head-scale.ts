/**
 * train-head at the cache's scale: what `trainHead` runs when the split is too large for the in-memory probe.
 *
 * One streamed pass over train counts the classes, accumulates the normalisation statistics and the rows' squared
 * norms, and keeps a stratified subsample; the probe's sweep (C × normalisation) runs on that subsample as it does
 * on a small cache; the probe fitted there at the chosen C warm-starts the streaming solver (stream-fit.ts), which
 * fits the training rows outside a seeded hold-out at that C (λ from every labelled row: the refit's); the temperature
 * is fitted on that fold model's logits of the hold-out, which it never saw; when the hold-out is a large share of
 * train, the saved head is then refitted on every row from the fold model, at the same λ; val is scored streamed.
 * Nothing of the split's size is held: memory is the subsample, the shuffle buffer, one part and the head, all sized
 * from the `memory` budget.
 */
import { hashScore } from '../dataset/split.js';
import { FeatcacheError, optionName } from '../errors.js';
import { MatMul } from '../head/probe/linalg.js';
import { calibrationReport, classificationMetrics, fitTemperature } from '../head/metrics.js';
import {
  type Normalization,
  type NormalizationKind,
  StandardAccumulator,
  applyNormalization,
} from '../head/normalize.js';
import { fitProbeHead, selectProbe } from '../head/probe/select.js';
import { cForStrength, l2Strength } from '../head/probe/probe.js';
import { type BackendChoice, loadTf } from '../head/runtime.js';
import { type HeadInfo, headProvenance, saveHead } from '../head/saved.js';
import { TEMPERATURE_PRIOR } from '../head/plan.js';
import {
  FitInterrupted,
  STREAM_BATCH,
  type StreamFitResult,
  curvature,
  fitStreaming,
  maxCentredNorm,
  rowMean,
  streamLogits,
} from '../head/minibatch/stream-fit.js';
import { softmaxRows } from '../head/model.js';
import { FeatureCache } from '../store/reader.js';
import { type RowBatch, mib, streamRows } from '../store/stream.js';
import type { TrainHeadResult } from './train-head.js';

/**
 * Above this many multiply-adds per pass (rows × dim × classes) the default sweeps on a subsample and streams the
 * final fit. Measured where streaming beats the in-memory probe in time at equal val accuracy (bench head-scale with
 * BENCH_HEAD_SCALE_SOLVERS=lbfgs,stream, × 2048 × 100, same cache per size, load 3–18; README, "Where
 * PROBE_WORK_LIMIT sits"): at 5 k rows (1.0·10⁹) the streamed path was faster (179 s vs 249 s) but 1.7 points
 * worse (its sweep saw 3,960 rows and chose another C); at 7.5 k rows (1.5·10⁹) it matched (0.982 vs 0.981) in
 * 52 s against 379 s. So the switch sits between the two, at 1.5·10⁹ (one synthetic set: a real one may move it).
 */
export const PROBE_WORK_LIMIT = 1.5e9;
/**
 * The sweep's subsample does at most this much work per pass (4,882 rows at 2048 × 100): the 7.5 k and 100 k runs
 * chose the probe's C on it and matched scikit-learn at that C on all rows within 0.1 points.
 */
export const SUBSAMPLE_WORK = 1e9;
/** What node, onnxruntime and TensorFlow.js take before any data (measured RSS ≈ 250–300 MB). */
export const BASE_BYTES = 320 * 2 ** 20;
/** The in-memory path holds the split about this many times over (read, labelled copy, normalised fold copies). */
export const IN_MEMORY_FACTOR = 4;
/** Epochs of the streaming solver when --epochs is not given. */
export const STREAM_EPOCHS = 3;
/** The temperature's hold-out is capped: a scalar needs thousands of rows, not millions. */
export const HOLDOUT_CAP = 20_000;
/** The subsample the sweep runs on has at least this many rows per class (when the class has them). */
export const MIN_SUBSAMPLE_PER_CLASS = 5;
/**
 * Above this share of train in the hold-out, the saved head is refitted on every row after the temperature is
 * fitted (10 k rows: the 20 % hold-out cost 0.45 points of val accuracy); at or below it the fold model is saved.
 */
export const REFIT_SHARE = 0.05;

export interface ScaleDecision {
  stream: boolean;
  /** One line: why. */
  why: string;
  rows: number;
  inMemoryBytes: number;
}

/** Whether the default (solver auto, linear head, sweep on) should stream, from sizes known before reading. */
export function chooseScale(rows: number, dim: number, classes: number, memoryBytes: number): ScaleDecision {
  const work = rows * dim * classes;
  const inMemoryBytes = BASE_BYTES + IN_MEMORY_FACTOR * rows * dim * 4;
  const size = `${rows} rows × ${dim} × ${classes} classes`;
  if (inMemoryBytes > memoryBytes)
    return {
      stream: true,
      why: `${size}: the in-memory probe needs about ${mib(inMemoryBytes)}, over the memory budget of ${mib(memoryBytes)}; sweeping on a subsample and streaming the final fit`,
      rows,
      inMemoryBytes,
    };
  if (work > PROBE_WORK_LIMIT)
    return {
      stream: true,
      why: `${size} = ${work.toExponential(1)} multiply-adds per pass, over the probe's limit of ${PROBE_WORK_LIMIT.toExponential(1)}; sweeping on a subsample and streaming the final fit`,
      rows,
      inMemoryBytes,
    };
  return {
    stream: false,
    why: `${size} = ${work.toExponential(1)} multiply-adds per pass, within the probe's limit of ${PROBE_WORK_LIMIT.toExponential(1)}: L-BFGS on all rows`,
    rows,
    inMemoryBytes,
  };
}

/** How the budget is shared out. */
export interface ScalePlan {
  subsampleRows: number;
  holdoutRows: number;
  bufferRows: number;
  /** Val rows scored (all of val when it fits). */
  valRows: number;
  /** Whether the scan keeps the hold-out's rows for the temperature (they fit an eighth of the budget). */
  keepHoldout: boolean;
}

export function planScale(
  trainRows: number,
  valRows: number,
  dim: number,
  classes: number,
  memoryBytes: number,
  holdoutFraction: number,
): ScalePlan {
  const free = Math.max(memoryBytes - BASE_BYTES, 16 * 2 ** 20);
  const rowBytes = dim * 4;
  // The sweep on the subsample holds it about IN_MEMORY_FACTOR times; a third of the budget goes there.
  const byMemory = Math.floor(free / 3 / (IN_MEMORY_FACTOR * rowBytes));
  const byWork = Math.floor(SUBSAMPLE_WORK / (dim * classes));
  const subsampleRows = Math.min(trainRows, Math.min(byMemory, Math.max(byWork, MIN_SUBSAMPLE_PER_CLASS * classes)));
  const holdoutRows = Math.min(
    HOLDOUT_CAP,
    Math.ceil(trainRows * holdoutFraction),
    Math.floor(free / 8 / (classes * 4)),
  );
  const bufferRows = Math.min(Math.max(1, trainRows), Math.max(STREAM_BATCH, Math.floor(free / 6 / rowBytes)));
  // Val's logits and two softmaxes of them are held for the metrics.
  const scored = Math.min(valRows, Math.floor(free / 6 / (3 * classes * 4 + 64)));
  // Kept from the scan, the hold-out spares the temperature a pass over train (30–37 s of 626 at 1 M × 2048).
  const keepHoldout = holdoutRows * rowBytes <= free / 8;
  return { subsampleRows, holdoutRows, bufferRows, valRows: scored, keepHoldout };
}

export interface ScaleOptions {
  cache: string;
  head: string;
  trainSplit: string;
  valSplit: string;
  normalize: NormalizationKind;
  seed: number;
  classWeight: 'none' | 'balanced';
  monitor: 'val_loss' | 'val_acc';
  holdoutFraction: number;
  grid: { c: readonly number[]; normalize: readonly NormalizationKind[] };
  backend: BackendChoice;
  weightDecay: number;
  epochs: number;
  /** Peak RSS budget in bytes. */
  memoryBytes: number;
  given: Set<string>;
  why: string;
  /** Keep the hold-out's rows from the scan (default: when the plan has room); false reads train again for them. */
  holdoutFromScan?: boolean | undefined;
  log: (line: string) => void;
  progress?: ((stage: string, done: number, total: number) => void) | undefined;
  signal?: AbortSignal | undefined;
}

/** What the streaming path adds to train-head's result. */
export interface ScaleInfo {
  why: string;
  subsampleRows: number;
  holdoutRows: number;
  /** Whether the temperature's hold-out rows were kept from the scan rather than read again. */
  holdoutFromScan: boolean;
  /** Whether the saved head was refitted on every row after the temperature (REFIT_SHARE). */
  refit: boolean;
  bufferRows: number;
  valRowsScored: number;
  memoryBudgetMb: number;
  peakRssMb: number;
  /** The sweep on the subsample (null when it could not run: `sweepSkipped` says why). */
  sweep: {
    candidates: number;
    chosen: { c: number | null; normalize: NormalizationKind; holdoutAcc: number };
    fixed: string[];
    seconds: number;
  } | null;
}

export type ScaleResult = TrainHeadResult & { scale: ScaleInfo; stages: Record<string, number> };

interface Scan {
  trainRows: number;
  classCounts: Float64Array;
  standard: Normalization;
  meanSquaredNorm: { none: number; l2: number; standard: number };
  subsample: { features: Float32Array; labels: Int32Array; count: number; paths: string[] };
  holdoutRows: number;
  /** The hold-out's rows, part by part, when the scan keeps them. */
  holdout: { features: Float32Array; labels: Int32Array }[] | null;
}

const HOLDOUT_SALT = 'featcache-holdout';
const SUBSAMPLE_SALT = 'featcache-subsample';

/**
 * One pass over train in commit order: class counts, standard statistics and ‖x‖² of the training rows, and a
 * stratified subsample (each class's rows with the lowest seeded hash, in proportion to the class's size).
 */
async function scanTrain(
  cache: FeatureCache,
  o: ScaleOptions,
  plan: ScalePlan,
  liveRows: number,
  isHeld: (key: string) => boolean,
  keepHoldout: boolean,
): Promise<Scan> {
  const { dim } = cache;
  const classes = cache.manifest.classes.length;
  const counts = new Float64Array(classes);
  const standard = new StandardAccumulator(dim);
  let squaredNorms = 0;
  let [trainRows, held] = [0, 0];
  // Keep candidates whose hash is under a threshold with room to spare, then take exact per-class quotas.
  const threshold = Math.min(1, (1.5 * plan.subsampleRows) / Math.max(1, liveRows) + 1e-3);
  const candidates: { key: string; label: number; score: number; row: Float32Array }[] = [];
  const lowest = new Map<number, { key: string; label: number; score: number; row: Float32Array }[]>();
  let done = 0;
  const holdout: { features: Float32Array; labels: Int32Array }[] = [];
  for await (const part of cache.batches(o.trainSplit)) {
    if (o.signal?.aborted) throw new FitInterrupted();
    const kept: number[] = [];
    const heldHere: number[] = [];
    for (let r = 0; r < part.count; r++) {
      const label = part.labels[r]!;
      const key = part.paths[r]!;
      if (label < 0) continue;
      if (isHeld(key)) {
        held++;
        heldHere.push(r);
        continue;
      }
      kept.push(r);
      counts[label]! += 1;
      trainRows++;
      const row = part.features.subarray(r * dim, (r + 1) * dim);
      let s = 0;
      for (let d = 0; d < dim; d++) s += row[d]! * row[d]!;
      squaredNorms += s;
      const score = hashScore(`${SUBSAMPLE_SALT}${o.seed}`, key);
      const entry = { key, label, score, row };
      if (score < threshold) candidates.push({ ...entry, row: row.slice() });
      // Every class keeps its MIN_SUBSAMPLE_PER_CLASS lowest scores whatever the threshold: small classes stay in.
      const list = lowest.get(label) ?? [];
      if (list.length < MIN_SUBSAMPLE_PER_CLASS || score < list[list.length - 1]!.score) {
        list.push({ ...entry, row: row.slice() });
        list.sort((a, b) => a.score - b.score);
        if (list.length > MIN_SUBSAMPLE_PER_CLASS) list.pop();
        lowest.set(label, list);
      }
    }
    standard.add(rowsOf(part, kept, dim).features, kept.length);
    if (keepHoldout && heldHere.length > 0) holdout.push(rowsOf(part, heldHere, dim));
    done += part.count;
    o.progress?.('scan', done, liveRows);
  }
  const stats = standard.result();
  const nonConstant = stats.std!.filter((s, d) => s !== 1 || stats.mean![d] !== 0).length;
  const subsample = stratifiedQuota(candidates, lowest, counts, trainRows, plan.subsampleRows, dim);
  return {
    trainRows,
    classCounts: counts,
    standard: stats,
    meanSquaredNorm: { none: squaredNorms / Math.max(1, trainRows), l2: 1, standard: nonConstant },
    subsample,
    holdoutRows: held,
    holdout: keepHoldout ? holdout : null,
  };
}

/** Copies of a part's rows `picked`, with their labels. */
function rowsOf(
  part: { features: Float32Array; labels: Int32Array | ArrayLike<number> },
  picked: number[],
  dim: number,
): { features: Float32Array; labels: Int32Array } {
  const features = new Float32Array(picked.length * dim);
  picked.forEach((r, k) => features.set(part.features.subarray(r * dim, (r + 1) * dim), k * dim));
  return { features, labels: Int32Array.from(picked, (r) => part.labels[r]!) };
}

/** Kept rows as batches of at least `batchRows` (parts hold few hold-out rows each; onnxruntime likes big batches). */
async function* keptBatches(
  chunks: { features: Float32Array; labels: Int32Array }[],
  dim: number,
  batchRows: number,
): AsyncGenerator<RowBatch> {
  for (let first = 0; first < chunks.length;) {
    let [last, count] = [first, 0];
    while (last < chunks.length && count < batchRows) count += chunks[last++]!.labels.length;
    const features = new Float32Array(count * dim);
    const labels = new Int32Array(count);
    let at = 0;
    for (const chunk of chunks.slice(first, last)) {
      features.set(chunk.features, at * dim);
      labels.set(chunk.labels, at);
      at += chunk.labels.length;
    }
    yield { count, dim, features, labels, keys: [] };
    first = last;
  }
}

/** Per class, round(m·n_c/n) rows by largest remainder (at least min(n_c, MIN_SUBSAMPLE_PER_CLASS)), lowest hash first. */
function stratifiedQuota(
  candidates: { key: string; label: number; score: number; row: Float32Array }[],
  lowest: Map<number, { key: string; label: number; score: number; row: Float32Array }[]>,
  counts: Float64Array,
  total: number,
  m: number,
  dim: number,
): Scan['subsample'] {
  const byClass = new Map<number, Map<string, { score: number; row: Float32Array }>>();
  for (const c of [...candidates, ...[...lowest.values()].flat()]) {
    const map = byClass.get(c.label) ?? new Map<string, { score: number; row: Float32Array }>();
    map.set(c.key, { score: c.score, row: c.row });
    byClass.set(c.label, map);
  }
  const chosen: { key: string; label: number; row: Float32Array }[] = [];
  counts.forEach((n, label) => {
    if (n === 0) return;
    const quota = Math.max(Math.min(n, MIN_SUBSAMPLE_PER_CLASS), Math.round((m * n) / Math.max(1, total)));
    const ranked = [...(byClass.get(label) ?? new Map<string, { score: number; row: Float32Array }>()).entries()].sort(
      (a, b) => a[1].score - b[1].score,
    );
    for (const [key, v] of ranked.slice(0, quota)) chosen.push({ key, label, row: v.row });
  });
  chosen.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const features = new Float32Array(chosen.length * dim);
  chosen.forEach((c, i) => features.set(c.row, i * dim));
  return {
    features,
    labels: Int32Array.from(chosen, (c) => c.label),
    count: chosen.length,
    paths: chosen.map((c) => c.key),
  };
}

/** Runs `f`, recording its seconds under `name`. */
async function stage<T>(stages: Record<string, number>, name: string, f: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await f();
  } finally {
    stages[name] = (performance.now() - started) / 1000;
  }
}

/** The streaming train-head (see the module comment). */
export async function trainHeadAtScale(o: ScaleOptions): Promise<ScaleResult> {
  const stages: Record<string, number> = {};
  const log = o.log;
  const cache = await FeatureCache.open(o.cache);
  const { dim } = cache;
  const classNames = cache.manifest.classes;
  const classes = classNames.length;
  const latest = await stage(stages, 'index', () => cache.latest(o.trainSplit));
  const liveRows = FeatureCache.liveRows(latest);
  const hasVal = o.valSplit !== o.trainSplit && (await cache.splits()).includes(o.valSplit);
  const valLive = hasVal ? FeatureCache.liveRows(await cache.latest(o.valSplit)) : 0;
  const plan = planScale(liveRows, valLive, dim, classes, o.memoryBytes, o.holdoutFraction);
  const holdFraction = plan.holdoutRows / Math.max(1, liveRows);
  const isHeld = (key: string) => hashScore(`${HOLDOUT_SALT}${o.seed}`, key) < holdFraction;
  const keepHoldout = o.holdoutFromScan ?? plan.keepHoldout;
  log(
    `train-head: streaming within a memory budget of ${mib(o.memoryBytes)}: subsample of up to ${plan.subsampleRows} rows for the sweep, hold-out of ~${plan.holdoutRows} rows for the temperature${keepHoldout ? ' (kept from the scan)' : ''}, shuffle buffer of ${plan.bufferRows} rows (${mib(plan.bufferRows * dim * 4)})`,
  );

  const scan = await stage(stages, 'scan', () => scanTrain(cache, o, plan, liveRows, isHeld, keepHoldout));
  if (scan.trainRows === 0)
    throw new FeatcacheError(
      `${optionName('cache')} ${o.cache}: split ${o.trainSplit} has no labelled rows; extract a labelled dataset`,
    );
  log(
    `train-head: ${scan.trainRows} training rows, ${scan.holdoutRows} held out; stratified subsample of ${scan.subsample.count} rows for the sweep`,
  );

  // The sweep on the subsample, exactly as on a small cache; C keeps its meaning (λ = 1/(C·n)) on all rows.
  const pinnedC = o.given.has('weightDecay')
    ? cForStrength(o.weightDecay, scan.trainRows + scan.holdoutRows, classes)
    : null;
  let choice = { c: pinnedC ?? 1, normalize: o.normalize };
  let sweep: ScaleInfo['sweep'] = null;
  let sweepSkipped: string | null = null;
  const mm = new MatMul();
  let warm: { kernel: Float32Array; bias: Float32Array };
  try {
    const selection = await stage(stages, 'sweep', () =>
      selectProbe(
        scan.subsample,
        dim,
        classes,
        {
          grid: {
            c: pinnedC === null ? o.grid.c : [pinnedC],
            normalize: o.given.has('normalize') ? [o.normalize] : o.grid.normalize,
          },
          holdoutFraction: o.holdoutFraction,
          seed: o.seed,
          classWeight: o.classWeight,
          monitor: o.monitor,
          keys: scan.subsample.paths,
          classNames,
          log,
        },
        mm,
      ),
    );
    if (typeof selection === 'string') {
      sweepSkipped = selection;
      log(`train-head: no sweep on the subsample: ${selection}; C ${choice.c}, normalize ${choice.normalize}`);
    } else {
      choice = { c: selection.chosen.c!, normalize: selection.chosen.normalize };
      const fixed = (['weightDecay', 'normalize'] as const).filter((k) => o.given.has(k)).map((k) => optionName(k));
      sweep = {
        chosen: {
          c: selection.chosen.c,
          normalize: selection.chosen.normalize,
          holdoutAcc: selection.chosen.holdoutAcc,
        },
        candidates: selection.table.length,
        fixed,
        seconds: selection.seconds,
      };
      log(
        `train-head: sweep on the ${scan.subsample.count}-row subsample (${selection.table.length} candidates${fixed.length > 0 ? `; fixed: ${fixed.join(', ')}` : ''}) chose normalize ${choice.normalize}, C ${choice.c} (held-out acc ${selection.chosen.holdoutAcc.toFixed(4)}; ${selection.seconds.toFixed(1)} s)`,
      );
    }
    const probe = await stage(stages, 'warmStart', () =>
      fitProbeHead(scan.subsample, dim, classes, choice.normalize, choice.c, o.classWeight, mm),
    );
    warm = { kernel: probe.layers[0]!.kernel, bias: probe.layers[0]!.bias };
    log(`train-head: warm start: probe on the subsample at C ${choice.c}, ${probe.iterations} iterations`);
  } finally {
    await mm.dispose();
  }

  const normalization: Normalization = choice.normalize === 'standard' ? scan.standard : { kind: choice.normalize };
  // The step size and the centre come from the subsample under the chosen normalisation.
  const geometry = await stage(stages, 'curvature', () => {
    const rows = scan.subsample.features.slice();
    applyNormalization(normalization, rows, scan.subsample.count, dim);
    const center = rowMean(rows, scan.subsample.count, dim);
    return Promise.resolve({
      center,
      curvature: curvature(rows, scan.subsample.count, dim, center),
      maxRowNorm: maxCentredNorm(rows, scan.subsample.count, dim, center),
    });
  });
  // λ is the refit's, on every labelled row, for the fold model too: its held-out logits are what the shipped head's
  // would be on unseen rows, so the temperature fitted on them holds for the head that is saved.
  const allRows = scan.trainRows + scan.holdoutRows;
  const lambda = Number.isFinite(choice.c) ? l2Strength(choice.c, allRows, classes) : 0;
  const classWeights =
    o.classWeight === 'balanced'
      ? Float32Array.from(scan.classCounts, (n) => (n > 0 ? scan.trainRows / (classes * n) : 0))
      : new Float32Array(classes).fill(1);
  const epochs = o.epochs;
  const refit = scan.holdoutRows > REFIT_SHARE * allRows;
  const streamFit = (name: string, rows: number, keep: (key: string) => boolean, init: typeof warm) =>
    stage(stages, name, () =>
      fitStreaming(
        (epoch) =>
          streamRows(cache, o.trainSplit, {
            seed: o.seed * 1009 + epoch + (name === 'refit' ? 7919 : 0),
            bufferRows: plan.bufferRows,
            batchRows: STREAM_BATCH * 4,
            keep: (key, label) => label >= 0 && keep(key),
            latest,
          }),
        {
          dim,
          classes,
          normalization,
          lambda,
          epochs,
          rowsPerEpoch: rows,
          center: geometry.center,
          curvature: geometry.curvature,
          maxRowNorm: geometry.maxRowNorm,
          classWeights,
          init,
          signal: o.signal,
          onProgress: (epoch, done) =>
            o.progress?.(`${name === 'refit' ? 'refit ' : ''}epoch ${epoch + 1}/${epochs}`, done, rows),
        },
      ),
    );
  const logEpochs = (fit: StreamFitResult, what: string) => {
    for (const e of fit.history)
      log(
        `train-head: ${what}epoch ${e.epoch}/${epochs} lr ${e.lr.toPrecision(3)} loss ${e.trainLoss.toFixed(4)} acc ${e.trainAcc.toFixed(4)} (${e.seconds.toFixed(1)} s, ${Math.round(e.rowsPerSecond)} rows/s)`,
      );
  };
  log(
    `train-head: streaming fit on the ${scan.trainRows} rows outside the hold-out: ${epochs} epochs of SGD (momentum, linear decay), C ${choice.c}`,
  );
  const fold = await streamFit('epochs', scan.trainRows, (key) => !isHeld(key), warm);
  logEpochs(fold, '');
  const foldHead = { kernel: fold.kernel, bias: fold.bias, normalization };

  // The temperature on the hold-out's out-of-fold logits: no fit that produced them saw those rows.
  const temperature = await stage(stages, 'temperature', async () => {
    const logits: Float32Array[] = [];
    const labels: number[] = [];
    const heldRows = scan.holdout
      ? keptBatches(scan.holdout, dim, 4096)
      : streamRows(cache, o.trainSplit, {
          seed: o.seed,
          bufferRows: STREAM_BATCH,
          batchRows: 4096,
          keep: (key, label) => label >= 0 && isHeld(key),
          latest,
        });
    // Normalised in place by streamLogits: the kept rows serve this stage only, and are let go after it.
    scan.holdout = null;
    await streamLogits(heldRows, foldHead, dim, classes, (batch, l) => {
      logits.push(l);
      labels.push(...batch.labels);
    });
    if (labels.length === 0) return 1;
    return fitTemperature(concatFloat(logits), Int32Array.from(labels), classes, TEMPERATURE_PRIOR);
  });
  if (o.signal?.aborted) throw new FitInterrupted();
  // A hold-out that is a large share of train costs accuracy if the saved head never sees it: refit on every row,
  // from the fold model, at the same λ and schedule. A small share (large caches) is not worth a second pass.
  let fit = fold;
  if (refit) {
    log(
      `train-head: refit on all ${allRows} rows (the hold-out is ${((100 * scan.holdoutRows) / allRows).toFixed(0)} % of train, over ${100 * REFIT_SHARE} %): ${epochs} epochs from the fold model`,
    );
    fit = await streamFit('refit', allRows, () => true, { kernel: fold.kernel, bias: fold.bias });
    logEpochs(fit, 'refit ');
  }
  const head = { kernel: fit.kernel, bias: fit.bias, normalization };
  const fittedRows = refit ? allRows : scan.trainRows;
  if (o.signal?.aborted) throw new FitInterrupted();

  // Metrics on val (a seeded subsample of it when its logits would not fit the budget), or on the hold-out.
  const evaluation = await stage(stages, 'evaluate', async () => {
    const split = hasVal ? o.valSplit : o.trainSplit;
    const fraction = hasVal ? plan.valRows / Math.max(1, valLive) : 1;
    const logits: Float32Array[] = [];
    const labels: number[] = [];
    await streamLogits(
      streamRows(cache, split, {
        seed: o.seed,
        bufferRows: STREAM_BATCH,
        batchRows: 4096,
        keep: (key, label) =>
          label >= 0 && (hasVal ? fraction >= 1 || hashScore(`val${o.seed}`, key) < fraction : isHeld(key)),
      }),
      // Without val the hold-out is scored, by the model that did not train on it.
      hasVal ? head : foldHead,
      dim,
      classes,
      (batch, l) => {
        logits.push(l);
        labels.push(...batch.labels);
      },
    );
    const all = concatFloat(logits);
    const y = Int32Array.from(labels);
    return {
      rows: y.length,
      metrics: classificationMetrics(softmaxRows(all, classes, temperature), y, classNames),
      calibration: calibrationReport(all, y, classes, temperature, softmaxRows),
    };
  });
  if (hasVal && evaluation.rows < valLive)
    log(`train-head: val scored on a seeded subsample of ${evaluation.rows} of its ${valLive} rows (memory budget)`);
  if (o.signal?.aborted) throw new FitInterrupted();

  const runtime = await loadTf(o.backend);
  const secondsPerEpoch = fit.history.reduce((s, e) => s + e.seconds, 0) / Math.max(1, fit.history.length);
  const setting: TrainHeadResult['setting'] = {
    solver: 'stream',
    normalize: choice.normalize,
    c: choice.c,
    lr: fit.lr,
    weightDecay: lambda,
    epochs,
  };
  const evaluatedOn = hasVal ? 'val' : 'train hold-out';
  const info: HeadInfo = {
    format: 1,
    classes: classNames,
    normalization,
    provenance: headProvenance(cache.manifest, o.cache, runtime, 'onnxruntime'),
    options: {
      ...setting,
      classWeight: o.classWeight,
      seed: o.seed,
      trainSplit: o.trainSplit,
      valSplit: hasVal ? o.valSplit : null,
      subsampleRows: scan.subsample.count,
      holdoutRows: scan.holdoutRows,
      holdoutFromScan: keepHoldout,
      refit,
      sweep: sweep ? { method: 'subsample', candidates: sweep.candidates, fixed: sweep.fixed } : null,
    },
    bestEpoch: epochs,
    summary: {
      top1: evaluation.metrics.top1,
      top5: evaluation.metrics.top5,
      ece: evaluation.calibration.after.ece,
      nll: evaluation.calibration.after.nll,
      evaluatedOn,
      trainRows: fittedRows,
      valRows: evaluation.rows,
    },
    temperature,
  };
  const scale = (): ScaleInfo => ({
    why: o.why,
    subsampleRows: scan.subsample.count,
    holdoutRows: scan.holdoutRows,
    holdoutFromScan: keepHoldout,
    refit,
    bufferRows: plan.bufferRows,
    valRowsScored: evaluation.rows,
    memoryBudgetMb: Math.round(o.memoryBytes / 2 ** 20),
    peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
    sweep,
  });
  const history = fit.history.map((e) => ({
    epoch: e.epoch,
    lr: e.lr,
    trainLoss: e.trainLoss,
    trainAcc: e.trainAcc,
    valLoss: null,
    valAcc: null,
    seconds: e.seconds,
  }));
  await stage(stages, 'save', () =>
    saveHead(runtime.tf, o.head, {
      info,
      layers: [{ kernel: fit.kernel, shape: [dim, classes], bias: fit.bias, activation: 'softmax' }],
      extras: {
        'history.json': `${JSON.stringify(fit.history, null, 2)}\n`,
        'metrics.json': `${JSON.stringify({ ...evaluation.metrics, evaluatedOn, calibration: evaluation.calibration, sweepSkipped, scale: scale(), stages }, null, 2)}\n`,
      },
    }),
  );
  return {
    head: o.head,
    backend: runtime.backend,
    backendSkipped: runtime.skipped,
    classes: classNames,
    trainRows: fittedRows,
    valRows: evaluation.rows,
    validation: hasVal ? 'split' : 'none',
    setting,
    engine: 'onnxruntime',
    probe: null,
    sweep: null,
    sweepSkipped,
    temperature,
    bestEpoch: epochs,
    stoppedEarly: false,
    secondsPerEpoch,
    history,
    metrics: evaluation.metrics,
    calibration: evaluation.calibration,
    scale: scale(),
    stages,
  };
}

function concatFloat(chunks: Float32Array[]): Float32Array {
  const out = new Float32Array(chunks.reduce((s, c) => s + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/** One line for the log and --json's summary. */
export function scaleSummaryLine(r: ScaleResult): string {
  const on = r.validation === 'none' ? 'train hold-out' : 'val';
  return (
    `train-head: ${r.trainRows} train rows streamed, ${r.valRows} ${on} rows scored, normalize ${r.setting.normalize}, C ${r.setting.c} (swept on ${r.scale.subsampleRows} rows), ${r.setting.epochs} epochs at ${(r.secondsPerEpoch ?? 0).toFixed(1)} s/epoch; ` +
    `${on} top-1 ${r.metrics.top1.toFixed(4)}, ECE ${r.calibration.before.ece.toFixed(3)} → ${r.calibration.after.ece.toFixed(3)} (T = ${r.temperature.toFixed(3)}); peak RSS ${r.scale.peakRssMb} MB of ${r.scale.memoryBudgetMb} MB → ${r.head}`
  );
}
