/**
 * The sweep's training step as one ONNX graph run by onnxruntime (MLAS kernels, all cores): forward matMul,
 * softmax-cross-entropy gradient written out by hand, the weight-gradient Gemm, and the optimiser update, in one
 * session.run per mini-batch. On the wasm fallback the same step costs ~30 tfjs ops of ~1 ms each on a wide
 * kernel; here it is one call. The saved format stays the TF.js LayersModel: this only trains the sweep's
 * candidates side by side ([dim, K·classes] kernel, per-column learning rate and weight decay).
 */
import * as os from 'node:os';
import * as ort from 'onnxruntime-node';
import { encodeModel, onnx } from '../backbone/graph.js';
import { ADAM, type HeadOptions } from './train.js';

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;

interface GraphBuilder {
  nodes: ReturnType<typeof onnx.NodeProto.create>[];
  initializers: ReturnType<typeof onnx.TensorProto.create>[];
  op(type: string, inputs: string[], attrs?: ReturnType<typeof onnx.AttributeProto.create>[]): string;
  scalar(value: number): string;
}

function builder(): GraphBuilder {
  let counter = 0;
  const b: GraphBuilder = {
    nodes: [],
    initializers: [],
    op(type, inputs, attrs = []) {
      const out = `${type.toLowerCase()}_${counter++}`;
      b.nodes.push(onnx.NodeProto.create({ name: out, opType: type, input: inputs, output: [out], attribute: attrs }));
      return out;
    },
    scalar(value) {
      const name = `const_${counter++}`;
      b.initializers.push(onnx.TensorProto.create({ name, dataType: FLOAT, dims: [], floatData: [value] }));
      return name;
    },
  };
  return b;
}

const valueInfo = (name: string, dims: (number | string)[], elemType = FLOAT) =>
  onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } } });

function int64s(b: GraphBuilder, name: string, values: number[]): string {
  b.initializers.push(onnx.TensorProto.create({ name, dataType: INT64, dims: [values.length], int64Data: values }));
  return name;
}

function rename(b: GraphBuilder, from: string, to: string): void {
  b.nodes.push(onnx.NodeProto.create({ name: `out_${to}`, opType: 'Identity', input: [from], output: [to] }));
}

/** PyTorch's update for one parameter, as graph nodes; returns the new value, first and second moment. */
function update(b: GraphBuilder, p: string, grad: string, m: string, v: string, options: Pick<HeadOptions, 'optimizer' | 'momentum'>): [string, string, string] {
  const g = b.op('Add', [grad, b.op('Mul', ['wd', p])]);
  if (options.optimizer === 'adam') {
    const m2 = b.op('Add', [b.op('Mul', [m, b.scalar(ADAM.beta1)]), b.op('Mul', [g, b.scalar(1 - ADAM.beta1)])]);
    const v2 = b.op('Add', [b.op('Mul', [v, b.scalar(ADAM.beta2)]), b.op('Mul', [b.op('Mul', [g, g]), b.scalar(1 - ADAM.beta2)])]);
    // PyTorch's (m/b1) / (√(v/b2) + ε), rewritten as (√b2/b1)·m / (√v + ε√b2): the bias corrections move onto
    // the [K·classes] learning-rate row and a scalar, two fewer passes over the [dim, K·classes] kernel per step.
    const root2 = b.op('Sqrt', ['bias2']);
    const lr = b.op('Mul', ['lr', b.op('Div', [root2, 'bias1'])]);
    const step = b.op('Div', [m2, b.op('Add', [b.op('Sqrt', [v2]), b.op('Mul', [root2, b.scalar(ADAM.epsilon)])])]);
    return [b.op('Sub', [p, b.op('Mul', [lr, step])]), m2, v2];
  }
  if (options.momentum > 0) {
    const m2 = b.op('Add', [b.op('Mul', [m, b.scalar(options.momentum)]), g]);
    return [b.op('Sub', [p, b.op('Mul', ['lr', m2])]), m2, b.op('Identity', [v])];
  }
  return [b.op('Sub', [p, b.op('Mul', ['lr', g])]), b.op('Identity', [m]), b.op('Identity', [v])];
}

/**
 * Inputs: x [n, dim], target [n, 1, classes] (one-hot × w_i/Σw), scale [n, 1, 1] (w_i/Σw), kernel/bias and their
 * moments, lr and wd [K·classes] (per candidate column), bias1/bias2 (Adam's 1 − β^t). Outputs: the updated six.
 * With `scoreHeld`, also held_x [h, dim] in and held_logits [h, K·classes] (with the updated weights) out: the
 * sweep scores its hold-out after an epoch's last step in the same run instead of a second one.
 */
export function trainStepGraph(dim: number, classes: number, k: number, options: Pick<HeadOptions, 'optimizer' | 'momentum'>, scoreHeld = false): Uint8Array {
  const wide = k * classes;
  const b = builder();
  const logits = b.op('Add', [b.op('MatMul', ['x', 'kernel']), 'bias']);
  const z3 = b.op('Reshape', [logits, int64s(b, 'shape3', [-1, k, classes])]);
  const p3 = b.op('Softmax', [z3], [onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 2 })]);
  // d(Σ_i s_i·CE_i)/dz_i = s_i·p_i − s_i·y_i: PyTorch's weighted-mean cross-entropy gradient.
  const g3 = b.op('Sub', [b.op('Mul', [p3, 'scale']), 'target']);
  const g = b.op('Reshape', [g3, int64s(b, 'shape2', [-1, wide])]);
  const gKernel = b.op('Gemm', ['x', g], [onnx.AttributeProto.create({ name: 'transA', type: onnx.AttributeProto.AttributeType.INT, i: 1 })]);
  const gBias = b.op('ReduceSum', [g, int64s(b, 'axis0', [0])], [onnx.AttributeProto.create({ name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 0 })]);
  const [kernel2, km2, kv2] = update(b, 'kernel', gKernel, 'kernel_m', 'kernel_v', options);
  const [bias2, bm2, bv2] = update(b, 'bias', gBias, 'bias_m', 'bias_v', options);
  const outs: [string, string][] = [[kernel2, 'kernel_out'], [km2, 'kernel_m_out'], [kv2, 'kernel_v_out'], [bias2, 'bias_out'], [bm2, 'bias_m_out'], [bv2, 'bias_v_out']];
  for (const [from, to] of outs) rename(b, from, to);
  if (scoreHeld) rename(b, b.op('Add', [b.op('MatMul', ['held_x', kernel2]), bias2]), 'held_logits');
  const params: [string, number[]][] = [['kernel', [dim, wide]], ['kernel_m', [dim, wide]], ['kernel_v', [dim, wide]], ['bias', [wide]], ['bias_m', [wide]], ['bias_v', [wide]]];
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'featcache-head-train-step',
      node: b.nodes,
      initializer: b.initializers,
      input: [
        valueInfo('x', ['n', dim]), valueInfo('target', ['n', 1, classes]), valueInfo('scale', ['n', 1, 1]),
        ...params.map(([name, dims]) => valueInfo(name, dims)),
        valueInfo('lr', [wide]), valueInfo('wd', [wide]), valueInfo('bias1', []), valueInfo('bias2', []),
        ...(scoreHeld ? [valueInfo('held_x', ['h', dim])] : []),
      ],
      output: [...outs.map(([, to]) => valueInfo(to, params.find(([n]) => `${n}_out` === to)![1])), ...(scoreHeld ? [valueInfo('held_logits', ['h', wide])] : [])],
    },
  });
  return encodeModel(model);
}

export function logitsGraph(dim: number, wide: number): Uint8Array {
  const b = builder();
  rename(b, b.op('Add', [b.op('MatMul', ['x', 'kernel']), 'bias']), 'logits');
  return encodeModel(onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'featcache-head-logits', node: b.nodes, initializer: b.initializers,
      input: [valueInfo('x', ['n', dim]), valueInfo('kernel', [dim, wide]), valueInfo('bias', [wide])],
      output: [valueInfo('logits', ['n', wide])],
    },
  }));
}

export interface WideState {
  kernel: Float32Array;
  bias: Float32Array;
}

/** Trains K candidates side by side with onnxruntime; state lives in JS arrays between calls. */
export class OrtWideTrainer {
  private state: Record<string, Float32Array>;
  private step = 0;
  private constructor(
    private readonly train: ort.InferenceSession,
    private readonly trainScored: ort.InferenceSession,
    private readonly infer: ort.InferenceSession,
    private readonly dim: number,
    private readonly wide: number,
    private readonly classes: number,
    init: WideState,
  ) {
    this.state = {
      kernel: init.kernel, kernel_m: new Float32Array(init.kernel.length), kernel_v: new Float32Array(init.kernel.length),
      bias: init.bias, bias_m: new Float32Array(init.bias.length), bias_v: new Float32Array(init.bias.length),
    };
  }

  static async create(dim: number, classes: number, k: number, options: Pick<HeadOptions, 'optimizer' | 'momentum'>, init: WideState): Promise<OrtWideTrainer> {
    // Sequential execution and all cores per kernel: each step is a short chain of large ops. No spinning: on a
    // busy machine spinning workers steal the cores the other workers need (measured 4–10× slower under load).
    const sessionOptions: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all', intraOpNumThreads: os.availableParallelism(), executionMode: 'sequential', logSeverityLevel: 3, extra: { session: { intra_op: { allow_spinning: '0' } } } };
    const train = await ort.InferenceSession.create(trainStepGraph(dim, classes, k, options), sessionOptions);
    const trainScored = await ort.InferenceSession.create(trainStepGraph(dim, classes, k, options, true), sessionOptions);
    const infer = await ort.InferenceSession.create(logitsGraph(dim, k * classes), sessionOptions);
    return new OrtWideTrainer(train, trainScored, infer, dim, k * classes, classes, init);
  }

  private tensor(name: string): ort.Tensor {
    const v = this.state[name]!;
    return new ort.Tensor('float32', v, name.startsWith('kernel') ? [this.dim, this.wide] : [this.wide]);
  }

  /**
   * One optimiser step on n rows: target = one-hot × s_i, scale = s_i (s_i = w_i / Σw). Given `held` rows, returns
   * their logits [rows, K·classes] after the step (as `logits` would), from the same run.
   */
  async stepBatch(x: Float32Array, n: number, target: Float32Array, scale: Float32Array, lr: Float32Array, wd: Float32Array, held?: { x: Float32Array; n: number }): Promise<Float32Array | null> {
    this.step++;
    const feeds: Record<string, ort.Tensor> = {
      x: new ort.Tensor('float32', x, [n, this.dim]),
      target: new ort.Tensor('float32', target, [n, 1, this.classes]),
      scale: new ort.Tensor('float32', scale, [n, 1, 1]),
      lr: new ort.Tensor('float32', lr, [this.wide]),
      wd: new ort.Tensor('float32', wd, [this.wide]),
      bias1: new ort.Tensor('float32', Float32Array.of(1 - ADAM.beta1 ** this.step), []),
      bias2: new ort.Tensor('float32', Float32Array.of(1 - ADAM.beta2 ** this.step), []),
    };
    for (const name of Object.keys(this.state)) feeds[name] = this.tensor(name);
    if (held) feeds.held_x = new ort.Tensor('float32', held.x, [held.n, this.dim]);
    const out = await (held ? this.trainScored : this.train).run(feeds);
    for (const name of Object.keys(this.state)) this.state[name] = out[`${name}_out`]!.data as Float32Array;
    return held ? (out.held_logits!.data as Float32Array) : null;
  }

  async logits(x: Float32Array, n: number): Promise<Float32Array> {
    const out = await this.infer.run({ x: new ort.Tensor('float32', x, [n, this.dim]), kernel: this.tensor('kernel'), bias: this.tensor('bias') });
    return out.logits!.data as Float32Array;
  }

  weights(): WideState {
    return { kernel: this.state.kernel!, bias: this.state.bias! };
  }

  async dispose(): Promise<void> {
    await this.train.release();
    await this.trainScored.release();
    await this.infer.release();
  }
}
