/**
 * The linear head's training step as one ONNX graph run by onnxruntime (MLAS kernels, all cores): forward matMul,
 * softmax-cross-entropy gradient written out by hand, the weight-gradient Gemm, and the optimiser update, in one
 * session.run per mini-batch. On the wasm fallback the same step costs ~30 tfjs ops of ~1 ms each; here it is one
 * call. The saved format stays the TF.js LayersModel: this only trains (the sweep's K candidates side by side as a
 * [dim, K·classes] kernel with per-column learning rate and weight decay, or one head for `fitHeadOrt`).
 *
 * Where the time goes (profiled with `enableProfiling`, 2048 → 120, batch 256): the two matMuls run at the
 * machine's sgemm peak; everything else is passes over the [dim, K·classes] state, so the graph is shaped to make
 * as few as possible:
 *  - the bias is the kernel's last row, fed by a ones column appended to x: no ReduceSum, no separate bias update;
 *  - the optimiser's elementwise work rides in Gemm's `beta·C` where it can: SGD keeps u = −lr·buf (PyTorch's
 *    momentum buffer scaled by the learning rate), so u' = Gemm(xᵀ, −lr·g, C = u, β = μ) and p' = p + u' is the only
 *    extra pass; Adam keeps m/(1−β1) and v/(1−β2), which moves every constant onto scalars and the lr row;
 *  - graph outputs are the producing nodes themselves (no Identity copies), written into preallocated tensors
 *    passed as `fetches`, double-buffered: each step reads one set of state buffers and writes the other. (Measured
 *    no faster than letting onnxruntime allocate them: onnxruntime-node 1.30 still hands back a fresh copy of every
 *    fetched output. What does pay is fewer round trips: `stepMany` runs several mini-batches, unrolled, per run.)
 * The reparametrisations are exact in real arithmetic; in float32 they differ from PyTorch's order of operations by
 * rounding only (the tests hold them to tfjs within 1e-5 of the weights' scale).
 */
import * as os from 'node:os';
import * as ort from '../../onnx/ort.js';
import {
  type AttributeProto,
  DataType,
  type NodeProto,
  type ShapeDim,
  type TensorProto,
  type ValueInfoProto,
  encodeModel,
  makeFloatAttribute,
  makeFloatTensor,
  makeInt64Tensor,
  makeIntAttribute,
  makeModel,
  makeNode,
  makeValueInfo,
} from '../../onnx/build.js';
import type { HeadOptions } from '../model.js';
import { ADAM } from './train.js';

const { FLOAT, INT32 } = DataType;

type Attr = AttributeProto;
const intAttr = makeIntAttribute;
const floatAttr = makeFloatAttribute;

interface GraphBuilder {
  nodes: NodeProto[];
  initializers: TensorProto[];
  /** Adds a node; its output is named `output` when given (a graph output), else a fresh name. */
  op(type: string, inputs: string[], attrs?: Attr[], output?: string): string;
  scalar(value: number): string;
  int64s(values: number[]): string;
}

function builder(): GraphBuilder {
  let counter = 0;
  const b: GraphBuilder = {
    nodes: [],
    initializers: [],
    op(type, inputs, attrs = [], output) {
      const out = output ?? `${type.toLowerCase()}_${counter++}`;
      b.nodes.push(makeNode(type, inputs, out, { attributes: attrs }));
      return out;
    },
    scalar(value) {
      const name = `const_${counter++}`;
      b.initializers.push(makeFloatTensor(name, [], [value]));
      return name;
    },
    int64s(values) {
      const name = `ints_${counter++}`;
      b.initializers.push(makeInt64Tensor(name, [values.length], values));
      return name;
    },
  };
  return b;
}

const valueInfo = (name: string, dims: ShapeDim[], elemType: number = FLOAT) => makeValueInfo(name, elemType, dims);

function model(name: string, b: GraphBuilder, input: ValueInfoProto[], output: ValueInfoProto[]): Uint8Array {
  return encodeModel(makeModel({ name, nodes: b.nodes, initializers: b.initializers, inputs: input, outputs: output }));
}

/** Which optimiser state rides beside the kernel: u = −lr·buf for SGD momentum, m/(1−β1) and v/(1−β2) for Adam. */
export function stateSlots(options: Pick<HeadOptions, 'optimizer' | 'momentum'>): string[] {
  if (options.optimizer === 'adam') return ['adam_m', 'adam_v'];
  return options.momentum > 0 ? ['velocity'] : [];
}

export interface StepGraphOptions {
  dim: number;
  classes: number;
  /** Candidates side by side (the kernel is [dim + 1, k·classes]). */
  k: number;
  optimizer: HeadOptions['optimizer'];
  momentum: number;
  /** Whether any column has weight decay; without it the graph skips the decay's passes over the kernel. */
  weightDecay: boolean;
  /** Also output the batch's Σ s_i·CE_i (`loss`) and correct count (`correct`) from the pre-update logits (k = 1). */
  stats: boolean;
  /** Also take held_x [h, dim] and output held_logits [h, k·classes] with the updated weights. */
  scoreHeld: boolean;
  /** Mini-batches per run, unrolled (default 1). */
  steps?: number;
}

/** Logits [rows, wide] of x [rows, dim] with an augmented kernel [dim + 1, wide] (bias as its last row). */
function plainLogits(b: GraphBuilder, x: string, kernel: string, dim: number, output?: string): string {
  const rows = b.op('Slice', [kernel, b.int64s([0]), b.int64s([dim]), b.int64s([0])]);
  const bias = b.op('Slice', [kernel, b.int64s([dim]), b.int64s([dim + 1]), b.int64s([0])]);
  return b.op('Add', [b.op('MatMul', [x, rows]), bias], [], output);
}

/** Σ s_i·CE_i and the correct count of logits [n, 1, classes] against labels [n, 1, 1] (scale s [n, 1, 1]). */
function batchStats(
  b: GraphBuilder,
  logProbs: string,
  logits: string,
  labels: string,
  scale: string,
  names: { loss: string; correct: string },
): void {
  const picked = b.op('GatherElements', [logProbs, labels], [intAttr('axis', 2)]);
  b.op(
    'Neg',
    [b.op('ReduceSum', [b.op('Mul', [picked, scale]), b.int64s([0, 1, 2])], [intAttr('keepdims', 0)])],
    [],
    names.loss,
  );
  // ArgMax keeps the first of tied maxima, as tf.argMax does.
  const argmax = b.op(
    'Cast',
    [b.op('ArgMax', [logits], [intAttr('axis', 2), intAttr('keepdims', 1)])],
    [intAttr('to', INT32)],
  );
  const hits = b.op('Cast', [b.op('Equal', [argmax, labels])], [intAttr('to', FLOAT)]);
  b.op('ReduceSum', [hits, b.int64s([0, 1, 2])], [intAttr('keepdims', 0)], names.correct);
}

/** Names of step s's own inputs and outputs: plain for a one-step graph, suffixed `_s` in an unrolled one. */
export function stepName(base: string, s: number, steps: number): string {
  return steps > 1 ? `${base}_${s}` : base;
}

/** One optimiser step's nodes from `state` (kernel and slots by name); returns the new state's names. */
function stepNodes(
  b: GraphBuilder,
  o: StepGraphOptions,
  s: number,
  state: Record<string, string>,
  last: boolean,
): Record<string, string> {
  const wide = o.k * o.classes;
  const steps = o.steps ?? 1;
  const io = (base: string) => stepName(base, s, steps);
  const out = (slot: string) => (last ? `${slot}_out` : undefined);
  const [x, scale, target] = [io('x'), io('scale'), io('target')];
  const z3 = b.op('Reshape', [b.op('MatMul', [x, state.kernel!]), b.int64s([-1, o.k, o.classes])]);
  let probs: string;
  if (o.stats) {
    // Log-probabilities first, as tfjs's step does, so the loss is exact where a probability underflows.
    const logProbs = b.op('LogSoftmax', [z3], [intAttr('axis', 2)]);
    probs = b.op('Exp', [logProbs]);
    batchStats(b, logProbs, z3, io('labels'), scale, { loss: io('loss'), correct: io('correct') });
  } else {
    probs = b.op('Softmax', [z3], [intAttr('axis', 2)]);
  }
  // d(Σ_i s_i·CE_i)/dz_i = s_i·p_i − s_i·y_i: PyTorch's weighted-mean cross-entropy gradient; SGD takes it as −lr·g.
  const flat = (g3: string) => b.op('Reshape', [g3, b.int64s([-1, wide])]);
  const transA = intAttr('transA', 1);
  const kernel = state.kernel!;
  if (o.optimizer === 'adam') {
    const g = flat(b.op('Sub', [b.op('Mul', [probs, scale]), target]));
    const decay = o.weightDecay ? [b.op('Mul', [kernel, 'wd'])] : [];
    const grad = b.op('Gemm', [x, g, ...decay], [transA]);
    const m = b.op('Add', [b.op('Mul', [state.adam_m!, b.scalar(ADAM.beta1)]), grad], [], out('adam_m'));
    const v = b.op(
      'Add',
      [b.op('Mul', [state.adam_v!, b.scalar(ADAM.beta2)]), b.op('Mul', [grad, grad])],
      [],
      out('adam_v'),
    );
    const rate = b.op('Mul', ['lr', io('adam_lr')]);
    const p = b.op(
      'Sub',
      [kernel, b.op('Mul', [rate, b.op('Div', [m, b.op('Add', [b.op('Sqrt', [v]), io('adam_eps')])])])],
      [],
      out('kernel'),
    );
    return { kernel: p, adam_m: m, adam_v: v };
  }
  const lr3 = b.op('Reshape', ['lr', b.int64s([o.k, o.classes])]);
  const step = flat(b.op('Mul', [b.op('Sub', [target, b.op('Mul', [probs, scale])]), lr3]));
  const lrWd = o.weightDecay ? b.op('Mul', ['lr', 'wd']) : null;
  if (o.momentum > 0) {
    // u' = μ·u − lr·(g + wd·p) = Gemm(xᵀ, −lr·g, C = u − (lr·wd/μ)·p, β = μ).
    const c = lrWd
      ? b.op('Sub', [state.velocity!, b.op('Mul', [kernel, b.op('Div', [lrWd, b.scalar(o.momentum)])])])
      : state.velocity!;
    const u = b.op('Gemm', [x, step, c], [transA, floatAttr('beta', o.momentum)], out('velocity'));
    return { kernel: b.op('Add', [kernel, u], [], out('kernel')), velocity: u };
  }
  // p' = (1 − lr·wd)·p − lr·g = Gemm(xᵀ, −lr·g, C = (1 − lr·wd)·p).
  const c = lrWd ? b.op('Mul', [kernel, b.op('Sub', [b.scalar(1), lrWd])]) : kernel;
  return { kernel: b.op('Gemm', [x, step, c], [transA], out('kernel')) };
}

/**
 * Inputs: x [n, dim + 1] (last column 1), target [n, 1, classes] (one-hot × s_i), scale [n, 1, 1] (s_i = w_i/Σw),
 * kernel [dim + 1, wide] and its state slots, lr and wd [wide] (per candidate column); Adam also takes adam_lr and
 * adam_eps (scalars: the bias corrections folded, see OrtWideTrainer). With `stats`, labels [n, 1, 1] int32.
 * Outputs: kernel_out and `<slot>_out` for each state slot (and with `stats`, loss and correct).
 * With `steps` > 1 the graph is that many steps unrolled: each step's own inputs and outputs are suffixed `_s`
 * (x_0, target_0, …, loss_0, …), the state flows from one step to the next inside onnxruntime, and only the last
 * step's state comes back: one run, one round trip of the state through JS, per `steps` mini-batches.
 */
export function trainStepGraph(o: StepGraphOptions): Uint8Array {
  const wide = o.k * o.classes;
  const steps = o.steps ?? 1;
  const b = builder();
  const slots = stateSlots(o);
  let state: Record<string, string> = Object.fromEntries(['kernel', ...slots].map((n) => [n, n]));
  for (let s = 0; s < steps; s++) state = stepNodes(b, o, s, state, s === steps - 1);
  if (o.scoreHeld) plainLogits(b, 'held_x', 'kernel_out', o.dim, 'held_logits');
  const kernelDims = [o.dim + 1, wide];
  const perStep = <T>(f: (s: number) => T[]): T[] => Array.from({ length: steps }, (_, s) => f(s)).flat();
  const io = (base: string, s: number) => stepName(base, s, steps);
  return model(
    'featcache-head-train-step',
    b,
    [
      ...perStep((s) => [
        valueInfo(io('x', s), ['n', o.dim + 1]),
        valueInfo(io('target', s), ['n', 1, o.classes]),
        valueInfo(io('scale', s), ['n', 1, 1]),
      ]),
      valueInfo('kernel', kernelDims),
      ...slots.map((s) => valueInfo(s, kernelDims)),
      valueInfo('lr', [wide]),
      ...(o.weightDecay ? [valueInfo('wd', [wide])] : []),
      ...(o.optimizer === 'adam'
        ? perStep((s) => [valueInfo(io('adam_lr', s), []), valueInfo(io('adam_eps', s), [])])
        : []),
      ...(o.stats ? perStep((s) => [valueInfo(io('labels', s), ['n', 1, 1], INT32)]) : []),
      ...(o.scoreHeld ? [valueInfo('held_x', ['h', o.dim])] : []),
    ],
    [
      ...['kernel', ...slots].map((name) => valueInfo(`${name}_out`, kernelDims)),
      ...(o.stats ? perStep((s) => [valueInfo(io('loss', s), []), valueInfo(io('correct', s), [])]) : []),
      ...(o.scoreHeld ? [valueInfo('held_logits', ['h', wide])] : []),
    ],
  );
}

/** x [n, dim] and an augmented kernel [dim + 1, wide] → logits [n, wide]. */
export function logitsGraph(dim: number, wide: number): Uint8Array {
  const b = builder();
  plainLogits(b, 'x', 'kernel', dim, 'logits');
  return model(
    'featcache-head-logits',
    b,
    [valueInfo('x', ['n', dim]), valueInfo('kernel', [dim + 1, wide])],
    [valueInfo('logits', ['n', wide])],
  );
}

/** x [n, dim], kernel [dim + 1, classes], labels [n] → unweighted Σ CE (`loss`) and correct count, as fitHead's evaluate. */
export function evaluateGraph(dim: number, classes: number): Uint8Array {
  const b = builder();
  const z3 = b.op('Reshape', [plainLogits(b, 'x', 'kernel', dim), b.int64s([-1, 1, classes])]);
  const labels = b.op('Reshape', ['labels', b.int64s([-1, 1, 1])]);
  const logProbs = b.op('LogSoftmax', [z3], [intAttr('axis', 2)]);
  batchStats(b, logProbs, z3, labels, b.scalar(1), { loss: 'loss', correct: 'correct' });
  return model(
    'featcache-head-evaluate',
    b,
    [valueInfo('x', ['n', dim]), valueInfo('kernel', [dim + 1, classes]), valueInfo('labels', ['n'], INT32)],
    [valueInfo('loss', []), valueInfo('correct', [])],
  );
}

export interface WideState {
  kernel: Float32Array;
  bias: Float32Array;
}

/** One mini-batch: x [n, dim] or [n, dim + 1] (from `batchBuffer`), target = one-hot × s_i, scale = s_i, labels (for stats). */
export interface StepBatch {
  x: Float32Array;
  n: number;
  target: Float32Array;
  scale: Float32Array;
  labels?: Int32Array;
}

export interface EngineOptions {
  /** Build the weight-decay passes (default true; false when every column's decay is 0). */
  weightDecay?: boolean;
  /** Return each step's loss and correct count (k = 1 only). */
  stats?: boolean;
}

/**
 * Sequential execution and all cores per kernel: each step is a short chain of large ops. No spinning: on a busy
 * machine spinning workers steal the cores the other workers need (measured 4–10× slower under load).
 */
export function engineSessionOptions(): ort.InferenceSession.SessionOptions {
  return {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: os.availableParallelism(),
    executionMode: 'sequential',
    logSeverityLevel: 3,
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
}

/** A float32 tensor over `data`, shaped. */
const f32 = (data: Float32Array, dims: number[]) => new ort.Tensor('float32', data, dims);

/**
 * Trains K candidates side by side with onnxruntime. State lives in two preallocated sets of JS buffers that the
 * graph reads from and writes into in turn, so a step allocates nothing of the kernel's size.
 */
export class OrtWideTrainer {
  private step = 0;
  /** [current, next]: each maps kernel and state-slot names to a [dim + 1, wide] buffer and its tensor. */
  private buffers: [Map<string, ort.Tensor>, Map<string, ort.Tensor>];
  private lastLr: Float32Array | null = null;
  private readonly slots: string[];
  private readonly copyBuffers: Float32Array[] = [];
  /** Unrolled multi-step sessions by step count. */
  private readonly unrolled = new Map<number, ort.InferenceSession>();
  private constructor(
    private readonly sessions: {
      train: ort.InferenceSession;
      trainScored: ort.InferenceSession;
      infer: ort.InferenceSession;
      evaluate: ort.InferenceSession | null;
    },
    private readonly dim: number,
    private readonly wide: number,
    private readonly classes: number,
    private readonly options: Pick<HeadOptions, 'optimizer' | 'momentum'> & EngineOptions,
    private readonly graph: Omit<StepGraphOptions, 'scoreHeld' | 'steps'>,
    init: WideState,
  ) {
    this.slots = stateSlots(options);
    const dims = [dim + 1, wide];
    const set = () =>
      new Map(['kernel', ...this.slots].map((name) => [name, f32(new Float32Array((dim + 1) * wide), dims)]));
    this.buffers = [set(), set()];
    const kernel = this.buffers[0].get('kernel')!.data as Float32Array;
    kernel.set(init.kernel);
    kernel.set(init.bias, dim * wide);
  }

  static async create(
    dim: number,
    classes: number,
    k: number,
    options: Pick<HeadOptions, 'optimizer' | 'momentum'>,
    init: WideState,
    engine: EngineOptions = {},
  ): Promise<OrtWideTrainer> {
    const graph = {
      dim,
      classes,
      k,
      optimizer: options.optimizer,
      momentum: options.momentum,
      weightDecay: engine.weightDecay ?? true,
      stats: engine.stats ?? false,
    };
    if (graph.stats && k !== 1) throw new Error('OrtWideTrainer: per-step stats need k = 1');
    const so = engineSessionOptions();
    const sessions = {
      train: await ort.InferenceSession.create(trainStepGraph({ ...graph, scoreHeld: false }), so),
      trainScored: await ort.InferenceSession.create(trainStepGraph({ ...graph, scoreHeld: true }), so),
      infer: await ort.InferenceSession.create(logitsGraph(dim, k * classes), so),
      evaluate: k === 1 ? await ort.InferenceSession.create(evaluateGraph(dim, classes), so) : null,
    };
    return new OrtWideTrainer(
      sessions,
      dim,
      k * classes,
      classes,
      { ...options, ...engine, weightDecay: graph.weightDecay, stats: graph.stats },
      graph,
      init,
    );
  }

  /** A reusable [rows, dim + 1] batch buffer with its ones column set: fill row i's first `dim` floats and pass it to `stepBatch`. */
  batchBuffer(rows: number): Float32Array {
    const x = new Float32Array(rows * (this.dim + 1));
    for (let i = 0; i < rows; i++) x[i * (this.dim + 1) + this.dim] = 1;
    return x;
  }

  /** x [n, dim] copied into a kept [n, dim + 1] buffer per step of a run (the sweep's batches), so a step allocates nothing. */
  private augmented(x: Float32Array, n: number, s: number): Float32Array {
    if (x.length === n * (this.dim + 1)) return x;
    if ((this.copyBuffers[s]?.length ?? 0) < n * (this.dim + 1)) this.copyBuffers[s] = this.batchBuffer(n);
    const out = this.copyBuffers[s]!.subarray(0, n * (this.dim + 1));
    for (let i = 0; i < n; i++) out.set(x.subarray(i * this.dim, (i + 1) * this.dim), i * (this.dim + 1));
    return out;
  }

  /** SGD keeps u = −lr·buf: when a column's learning rate changes (StepLR), u is rescaled so buf stays PyTorch's. */
  private rescaleVelocity(lr: Float32Array): void {
    const last = this.lastLr;
    this.lastLr = Float32Array.from(lr);
    if (!last || !this.slots.includes('velocity') || last.every((v, j) => v === lr[j])) return;
    const ratio = Float32Array.from(lr, (v, j) => v / last[j]!);
    const u = this.buffers[0].get('velocity')!.data as Float32Array;
    for (let r = 0; r <= this.dim; r++) for (let j = 0; j < this.wide; j++) u[r * this.wide + j]! *= ratio[j]!;
  }

  private async run(
    session: ort.InferenceSession,
    feeds: Record<string, ort.Tensor>,
  ): Promise<ort.InferenceSession.OnnxValueMapType> {
    const [current, next] = this.buffers;
    const fetches: Record<string, ort.Tensor | null> = {};
    for (const [name, t] of current) feeds[name] = t;
    for (const [name, t] of next) fetches[`${name}_out`] = t;
    for (const name of session.outputNames) if (!(name in fetches)) fetches[name] = null;
    const out = await session.run(feeds, fetches);
    this.buffers = [next, current];
    return out;
  }

  /**
   * One optimiser step on n rows: x [n, dim] or [n, dim + 1] (from `batchBuffer`), target = one-hot × s_i,
   * scale = s_i (s_i = w_i / Σw); with stats, labels [n]. Given `held` rows, also returns their logits
   * [rows, K·classes] after the step (as `logits` would), from the same run.
   */
  async stepBatch(
    x: Float32Array,
    n: number,
    target: Float32Array,
    scale: Float32Array,
    lr: Float32Array,
    wd: Float32Array,
    held?: { x: Float32Array; n: number },
    labels?: Int32Array,
  ): Promise<Float32Array | null> {
    return (await this.stepWithStats(x, n, target, scale, lr, wd, held, labels)).heldLogits;
  }

  /** As `stepBatch`, also returning the batch's Σ s_i·CE_i and correct count when built with `stats`. */
  async stepWithStats(
    x: Float32Array,
    n: number,
    target: Float32Array,
    scale: Float32Array,
    lr: Float32Array,
    wd: Float32Array,
    held?: { x: Float32Array; n: number },
    labels?: Int32Array,
  ): Promise<{ heldLogits: Float32Array | null; loss: number; correct: number }> {
    this.rescaleVelocity(lr);
    const feeds = this.commonFeeds(lr, wd);
    this.batchFeeds(feeds, { x, n, target, scale, labels }, 0, 1);
    if (held) feeds.held_x = f32(held.x, [held.n, this.dim]);
    const out = await this.run(held ? this.sessions.trainScored : this.sessions.train, feeds);
    return {
      heldLogits: held ? (out.held_logits!.data as Float32Array) : null,
      loss: this.options.stats ? (out.loss!.data as Float32Array)[0]! : NaN,
      correct: this.options.stats ? (out.correct!.data as Float32Array)[0]! : NaN,
    };
  }

  /**
   * Several optimiser steps in one run (an unrolled graph, built on first use for each count): the same updates as
   * that many `stepWithStats` calls, with one round trip of the state instead of one per step. Every batch must
   * have the same row count; returns each step's stats.
   */
  async stepMany(
    batches: StepBatch[],
    lr: Float32Array,
    wd: Float32Array,
  ): Promise<{ loss: number; correct: number }[]> {
    const steps = batches.length;
    if (steps === 1)
      return [
        await this.stepWithStats(
          batches[0]!.x,
          batches[0]!.n,
          batches[0]!.target,
          batches[0]!.scale,
          lr,
          wd,
          undefined,
          batches[0]!.labels,
        ),
      ];
    if (batches.some((b) => b.n !== batches[0]!.n))
      throw new Error('OrtWideTrainer.stepMany: batches differ in row count');
    let session = this.unrolled.get(steps);
    if (!session) {
      session = await ort.InferenceSession.create(
        trainStepGraph({ ...this.graph, scoreHeld: false, steps }),
        engineSessionOptions(),
      );
      this.unrolled.set(steps, session);
    }
    this.rescaleVelocity(lr);
    const feeds = this.commonFeeds(lr, wd);
    batches.forEach((batch, s) => this.batchFeeds(feeds, batch, s, steps));
    const out = await this.run(session, feeds);
    const value = (name: string) => (this.options.stats ? (out[name]!.data as Float32Array)[0]! : NaN);
    return batches.map((_, s) => ({
      loss: value(stepName('loss', s, steps)),
      correct: value(stepName('correct', s, steps)),
    }));
  }

  private commonFeeds(lr: Float32Array, wd: Float32Array): Record<string, ort.Tensor> {
    const feeds: Record<string, ort.Tensor> = { lr: f32(lr, [this.wide]) };
    if (this.options.weightDecay) feeds.wd = f32(wd, [this.wide]);
    return feeds;
  }

  /** Step s's own feeds; counts the optimiser step (Adam's bias corrections depend on it). */
  private batchFeeds(feeds: Record<string, ort.Tensor>, batch: StepBatch, s: number, steps: number): void {
    this.step++;
    const { n } = batch;
    const io = (base: string) => stepName(base, s, steps);
    feeds[io('x')] = f32(this.augmented(batch.x, n, s), [n, this.dim + 1]);
    feeds[io('target')] = f32(
      batch.target.length === n * this.classes ? batch.target : batch.target.subarray(0, n * this.classes),
      [n, 1, this.classes],
    );
    feeds[io('scale')] = f32(batch.scale.length === n ? batch.scale : batch.scale.subarray(0, n), [n, 1, 1]);
    if (this.options.optimizer === 'adam') {
      // PyTorch's lr·m̂/(√v̂ + ε) with m = (1−β1)·m̃, v = (1−β2)·ṽ: lr·(c1/c2)·m̃/(√ṽ + ε/c2).
      const c1 = (1 - ADAM.beta1) / (1 - ADAM.beta1 ** this.step);
      const c2 = Math.sqrt((1 - ADAM.beta2) / (1 - ADAM.beta2 ** this.step));
      feeds[io('adam_lr')] = f32(Float32Array.of(c1 / c2), []);
      feeds[io('adam_eps')] = f32(Float32Array.of(ADAM.epsilon / c2), []);
    }
    if (this.options.stats) {
      if (!batch.labels) throw new Error('OrtWideTrainer: stats need labels');
      feeds[io('labels')] = new ort.Tensor(
        'int32',
        batch.labels.length === n ? batch.labels : batch.labels.subarray(0, n),
        [n, 1, 1],
      );
    }
  }

  private kernelTensor(): ort.Tensor {
    return this.buffers[0].get('kernel')!;
  }

  async logits(x: Float32Array, n: number): Promise<Float32Array> {
    const out = await this.sessions.infer.run({ x: f32(x, [n, this.dim]), kernel: this.kernelTensor() });
    return out.logits!.data as Float32Array;
  }

  /** Unweighted Σ cross-entropy and correct count of rows x [n, dim] with labels [n] (k = 1). */
  async evaluate(x: Float32Array, n: number, labels: Int32Array): Promise<{ lossSum: number; correct: number }> {
    if (!this.sessions.evaluate) throw new Error('OrtWideTrainer: evaluate needs k = 1');
    const out = await this.sessions.evaluate.run({
      x: f32(x, [n, this.dim]),
      kernel: this.kernelTensor(),
      labels: new ort.Tensor('int32', labels, [n]),
    });
    return { lossSum: (out.loss!.data as Float32Array)[0]!, correct: (out.correct!.data as Float32Array)[0]! };
  }

  /** A copy of the current kernel [dim, wide] and bias [wide]. */
  weights(): WideState {
    const all = this.kernelTensor().data as Float32Array;
    return { kernel: all.slice(0, this.dim * this.wide), bias: all.slice(this.dim * this.wide) };
  }

  async dispose(): Promise<void> {
    for (const s of [...Object.values(this.sessions), ...this.unrolled.values()]) await s?.release();
  }
}
