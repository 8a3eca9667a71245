/**
 * Static int8 quantisation of a tapped CNN backbone, as a QDQ graph that onnxruntime's optimiser fuses into
 * QLinearConv / QLinearAdd. The recipe is the one measured fastest on CPU (3.4–3.5× FP32 on ResNet50 with VNNI):
 * - weights int8, symmetric, per output channel (DequantizeLinear on axis 0); biases int32 with scale = input scale ×
 *   weight scale, so the integer accumulator needs no rescaling;
 * - activations uint8 per tensor: the image input, every Relu output (zero point 0, so onnxruntime drops the Relu),
 *   MaxPool outputs (with their input's parameters), the inputs of every Add and the outputs of Conv/Add that no Relu
 *   follows. Signed activations, or Adds left in float, fused only partly and ran 0.9–1.6× FP32.
 * - each consumer of a quantised tensor gets its own DequantizeLinear (onnxruntime only fuses single-consumer DQs);
 *   GlobalAveragePool and Gemm stay float.
 */
import { FeatcacheError, optionName } from '../errors.js';
import { type ActivationRange, type CalibrationBatch, type RangeMethod, collectRanges } from './calibrate.js';
import {
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  decodeModel,
  encodeModel,
  graphInputs,
} from './graph.js';
import { DataType, makeIntAttribute, makeNode, makeTensor, withGraph } from '../onnx/build.js';
import { DEFAULT_INT8_OPTIONS, INT8_RECIPE } from './int8-defaults.js';

export { INT8_RECIPE };

export interface Int8Options {
  /** Images sampled from the dataset to calibrate activation ranges. */
  calibrate: number;
  /**
   * `mse` (default): per tensor, the clipping range with the least expected squared quantisation error (on the
   * ResNet50 fixture: median centred cosine vs FP32 0.964, against 0.959 for min/max); `minmax`: the observed range;
   * `percentile`: clip the tails at `calibrationPercentile`.
   */
  calibrationRanges: RangeMethod;
  /** Upper percentile kept by `percentile` ranges (the lower bound is 100 − this). */
  calibrationPercentile: number;
  /** Seed of the calibration sample. */
  seed: number;
  /** Images per calibration forward pass (bounds memory: every quantised activation is read back). */
  calibrationBatch: number;
}

export { DEFAULT_INT8_OPTIONS };

/** Ops the recipe handles; anything else means the model is not a plain CNN and stays FP32 (with the reason). */
export const SUPPORTED_OPS: readonly string[] = Object.freeze([
  'Conv',
  'Gemm',
  'Relu',
  'Add',
  'MaxPool',
  'GlobalAveragePool',
  'Flatten',
  'Reshape',
  'Identity',
]);

const QUANTISED_OPS =
  /^(QuantizeLinear|DequantizeLinear|DynamicQuantizeLinear|QLinear.*|ConvInteger|MatMulInteger|.*Integer)$/;

/** Thrown for a model the recipe cannot quantise (user error); `Int8Unsupported` means "fall back to FP32". */
export class Int8Unsupported extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'Int8Unsupported';
  }
}

export interface QuantParams {
  scale: number;
  zeroPoint: number;
}

export interface ActivationPlan {
  tensor: string;
  /** Why it is quantised, for the report. */
  role: 'input' | 'relu' | 'maxpool' | 'add-input' | 'conv-input' | 'output';
  /** MaxPool outputs reuse their input's parameters (max commutes with a monotone quantiser). */
  sameAs?: string;
}

export interface QuantizeReport {
  recipe: string;
  convs: number;
  adds: number;
  activations: number;
  /** Per quantised activation: calibrated range and the uint8 parameters derived from it. */
  ranges: Record<string, ActivationRange & QuantParams>;
}

/** Refuses already-quantised models (a user error) and reports unsupported ones (an FP32 fallback). */
/** @internal */
export function checkQuantisable(model: ModelProto, what: string): void {
  const graph = model.graph as GraphProto;
  const quantised = [
    ...new Set((graph.node ?? []).map((n) => n.opType ?? '').filter((op) => QUANTISED_OPS.test(op))),
  ].sort();
  const intWeights = (graph.initializer ?? []).some(
    (t) => t.dataType === DataType.INT8 || t.dataType === DataType.UINT8,
  );
  if (quantised.length > 0 || intWeights) {
    throw new FeatcacheError(
      `${optionName('int8')}: ${what} is already quantised (${quantised.length > 0 ? `has ${quantised.join(', ')}` : 'has int8/uint8 weights'}); run it without ${optionName('int8')} — featcache quantises float models only`,
    );
  }
  const opset = (model.opsetImport ?? []).find((o) => !o.domain || o.domain === 'ai.onnx');
  if (opset && Number(opset.version) < 13)
    throw new Int8Unsupported(`opset ${Number(opset.version)} < 13 (per-channel DequantizeLinear needs 13)`);
  const unsupported = [
    ...new Set((graph.node ?? []).map((n) => n.opType ?? '').filter((op) => !SUPPORTED_OPS.includes(op))),
  ].sort();
  if (unsupported.length > 0) {
    throw new Int8Unsupported(
      `unsupported ops ${unsupported.join(', ')} (the int8 recipe covers ${SUPPORTED_OPS.join('/')})`,
    );
  }
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  const computedWeight = (graph.node ?? []).find((n) => n.opType === 'Conv' && !initializers.has(n.input?.[1] ?? ''));
  if (computedWeight)
    throw new Int8Unsupported(`Conv ${computedWeight.name} takes its weights from another node, not an initializer`);
}

function consumers(graph: GraphProto): Map<string, NodeProto[]> {
  const map = new Map<string, NodeProto[]>();
  for (const node of graph.node ?? [])
    for (const input of node.input ?? []) if (input) map.set(input, [...(map.get(input) ?? []), node]);
  return map;
}

/** Which activations get a QuantizeLinear, following the recipe. Order: graph order (input first). */
/** @internal */
export function planActivations(graph: GraphProto): ActivationPlan[] {
  const input = graphInputs(graph)[0]?.name;
  if (!input) throw new FeatcacheError(`${optionName('int8')}: the model has no image input`);
  const users = consumers(graph);
  const plan = new Map<string, ActivationPlan>();
  const add = (tensor: string, role: ActivationPlan['role'], sameAs?: string) => {
    if (!plan.has(tensor)) plan.set(tensor, sameAs ? { tensor, role, sameAs } : { tensor, role });
  };
  add(input, 'input');
  const onlyRelu = (tensor: string) => {
    const u = users.get(tensor) ?? [];
    return u.length === 1 && u[0]!.opType === 'Relu';
  };
  for (const node of graph.node ?? []) {
    const out = node.output?.[0] ?? '';
    switch (node.opType) {
      case 'Conv':
        add(node.input![0]!, 'conv-input');
        if (!onlyRelu(out)) add(out, (users.get(out) ?? []).some((u) => u.opType === 'Add') ? 'add-input' : 'output');
        break;
      case 'Add':
        for (const i of node.input ?? []) add(i, 'add-input');
        if (!onlyRelu(out)) add(out, 'output');
        break;
      case 'Relu':
        add(out, 'relu');
        break;
      case 'MaxPool':
        add(node.input![0]!, 'conv-input');
        add(out, 'maxpool', node.input![0]);
        break;
    }
  }
  const order = new Map<string, number>();
  (graph.node ?? []).forEach((n, i) => (n.output ?? []).forEach((o) => order.set(o, i)));
  return [...plan.values()].sort((a, b) => (order.get(a.tensor) ?? -1) - (order.get(b.tensor) ?? -1));
}

/** uint8 parameters for a range; the range is widened to contain 0 so zero padding stays exact. */
export function uint8Params(range: ActivationRange, relu: boolean): QuantParams {
  const min = relu ? 0 : Math.min(range.min, 0);
  const max = Math.max(range.max, 0);
  const span = max - min;
  if (!(span > 1e-12) || !Number.isFinite(span)) return { scale: 1, zeroPoint: 0 };
  const scale = span / 255;
  return { scale, zeroPoint: Math.max(0, Math.min(255, Math.round(-min / scale))) };
}

/** Symmetric int8 per output channel: scale_c = max|w_c| / 127. */
export function quantiseWeights(values: Float32Array, channels: number): { q: Int8Array; scales: Float32Array } {
  const per = values.length / channels;
  const q = new Int8Array(values.length);
  const scales = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    let maxAbs = 0;
    for (let i = c * per; i < (c + 1) * per; i++) maxAbs = Math.max(maxAbs, Math.abs(values[i]!));
    const scale = maxAbs > 0 ? maxAbs / 127 : 1;
    scales[c] = scale;
    for (let i = c * per; i < (c + 1) * per; i++) q[i] = Math.max(-127, Math.min(127, Math.round(values[i]! / scale)));
  }
  return { q, scales };
}

/** @internal */
export function floatValues(tensor: TensorProto): Float32Array {
  if (tensor.floatData && tensor.floatData.length > 0) return Float32Array.from(tensor.floatData);
  const raw = tensor.rawData ?? new Uint8Array();
  return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
}

/** A node of the QDQ rewrite, named after its op and output; `axis` for per-channel dequantisation. */
function qdqNode(opType: string, inputs: string[], output: string, axis?: number): NodeProto {
  const attributes = axis === undefined ? [] : [makeIntAttribute('axis', axis)];
  return makeNode(opType, inputs, output, { name: `featcache/int8/${opType}/${output}`, attributes });
}

/**
 * A Conv's weight (int8, per output channel) and, when its input is quantised, its bias (int32 at input scale × weight
 * scale, as QLinearConv takes it), each behind a DequantizeLinear; `inputs` replace the Conv's inputs 1 and 2.
 */
function quantisedConvInputs(
  conv: NodeProto,
  inits: Map<string, TensorProto>,
  inputScale: number | undefined,
): { initializers: TensorProto[]; nodes: NodeProto[]; inputs: string[]; replaced: string[] } {
  const w = inits.get(conv.input![1]!)!;
  const channels = Number(w.dims![0]);
  const { q, scales } = quantiseWeights(floatValues(w), channels);
  const base = `${conv.output![0]}__w`;
  const initializers = [
    makeTensor(`${base}_i8`, DataType.INT8, (w.dims ?? []).map(Number), q),
    makeTensor(`${base}_scale`, DataType.FLOAT, [channels], scales),
    makeTensor(`${base}_zp`, DataType.INT8, [channels], new Int8Array(channels)),
  ];
  const nodes = [qdqNode('DequantizeLinear', [`${base}_i8`, `${base}_scale`, `${base}_zp`], `${base}_dq`, 0)];
  const inputs = [`${base}_dq`];
  const replaced = [w.name ?? ''];
  const biasName = conv.input![2];
  if (biasName && inputScale !== undefined) {
    const bias = floatValues(inits.get(biasName)!);
    const bScales = new Float32Array(channels);
    const bq = new Int32Array(channels);
    for (let c = 0; c < channels; c++) {
      bScales[c] = inputScale * scales[c]!;
      bq[c] = Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.round(bias[c]! / bScales[c]!)));
    }
    const b = `${conv.output![0]}__b`;
    initializers.push(
      makeTensor(`${b}_i32`, DataType.INT32, [channels], bq),
      makeTensor(`${b}_scale`, DataType.FLOAT, [channels], bScales),
      makeTensor(`${b}_zp`, DataType.INT32, [channels], new Int32Array(channels)),
    );
    nodes.push(qdqNode('DequantizeLinear', [`${b}_i32`, `${b}_scale`, `${b}_zp`], `${b}_dq`, 0));
    inputs.push(`${b}_dq`);
    replaced.push(biasName);
  }
  return { initializers, nodes, inputs, replaced };
}

/**
 * The QDQ graph for given activation parameters. Pure graph surgery: no onnxruntime, so it is testable on its own.
 */
/** @internal */
export function buildQdqModel(model: ModelProto, params: Map<string, QuantParams>): ModelProto {
  const graph = model.graph as GraphProto;
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t]));
  const newInits: TensorProto[] = [];
  const qName = (t: string) => `${t}__u8`;
  const scaleName = (t: string) => `${t}__scale`;
  const zpName = (t: string) => `${t}__zp`;
  for (const [t, p] of params) {
    newInits.push(makeTensor(scaleName(t), DataType.FLOAT, [], new Float32Array([p.scale])));
    newInits.push(makeTensor(zpName(t), DataType.UINT8, [], new Uint8Array([p.zeroPoint])));
  }
  const quantiseNode = (t: string) => qdqNode('QuantizeLinear', [t, scaleName(t), zpName(t)], qName(t));
  let dqCount = 0;
  const dequantised = (t: string, out: NodeProto[]) => {
    const name = `${t}__dq${dqCount++}`;
    out.push(qdqNode('DequantizeLinear', [qName(t), scaleName(t), zpName(t)], name));
    return name;
  };
  const nodes: NodeProto[] = [];
  const input = graphInputs(graph)[0]!.name;
  if (params.has(input)) nodes.push(quantiseNode(input));
  const replaced = new Set<string>();
  for (const original of graph.node ?? []) {
    const n: NodeProto = { ...original, input: [...(original.input ?? [])] };
    for (let i = 0; i < n.input!.length; i++) {
      const t = n.input![i]!;
      if (params.has(t)) n.input![i] = dequantised(t, nodes);
    }
    if (n.opType === 'Conv') {
      const conv = quantisedConvInputs(original, inits, params.get(original.input![0]!)?.scale);
      newInits.push(...conv.initializers);
      nodes.push(...conv.nodes);
      conv.inputs.forEach((name, i) => (n.input![i + 1] = name));
      for (const name of conv.replaced) replaced.add(name);
    }
    nodes.push(n);
    for (const out of original.output ?? []) if (params.has(out)) nodes.push(quantiseNode(out));
  }
  const stillUsed = new Set(nodes.flatMap((n) => n.input ?? []));
  const kept = (graph.initializer ?? []).filter((t) => !replaced.has(t.name ?? '') || stillUsed.has(t.name ?? ''));
  return withGraph(model, {
    node: nodes,
    initializer: [...kept, ...newInits],
    // Types of rewired tensors changed; onnxruntime infers them again.
    valueInfo: [],
  });
}

const report0 = (graph: GraphProto) =>
  `${(graph.node ?? []).filter((n) => n.opType === 'Conv').length} Conv, ${(graph.node ?? []).filter((n) => n.opType === 'Add').length} Add`;

/** uint8 parameters for every planned activation from calibrated ranges (MaxPool outputs copy their input's). */
export function activationParams(
  plan: ActivationPlan[],
  ranges: Map<string, ActivationRange>,
): Map<string, QuantParams> {
  const params = new Map<string, QuantParams>();
  const roles = new Map(plan.map((p) => [p.tensor, p]));
  const paramsOf = (t: string): QuantParams => {
    const known = params.get(t);
    if (known) return known;
    const entry = roles.get(t)!;
    const p = entry.sameAs
      ? paramsOf(entry.sameAs)
      : uint8Params(ranges.get(t) ?? { min: 0, max: 0 }, entry.role === 'relu');
    params.set(t, p);
    return p;
  };
  for (const p of plan) paramsOf(p.tensor);
  return params;
}

/**
 * Quantises a tapped FP32 model (output FEATURE_OUTPUT) with activation ranges calibrated on `batches`.
 * Throws FeatcacheError for an already-quantised model and Int8Unsupported for one outside the recipe.
 */
export async function quantizeModel(
  tapped: Uint8Array,
  batches: () => AsyncIterable<CalibrationBatch>,
  options: Partial<Int8Options> & {
    what?: string;
    threads?: number | undefined;
    log?: ((line: string) => void) | undefined;
  } = {},
): Promise<{ bytes: Uint8Array; report: QuantizeReport }> {
  const settings = { ...DEFAULT_INT8_OPTIONS, ...options };
  const model = decodeModel(tapped, options.what ?? 'model');
  checkQuantisable(model, options.what ?? 'the model');
  const graph = model.graph as GraphProto;
  const plan = planActivations(graph);
  const measured = plan.filter((p) => !p.sameAs).map((p) => p.tensor);
  options.log?.(
    `int8: calibrating ${plan.length} activations (${settings.calibrationRanges} ranges) and quantising ${report0(graph)}`,
  );
  const ranges = await collectRanges(model, measured, batches(), {
    method: settings.calibrationRanges,
    percentile: settings.calibrationPercentile,
    threads: options.threads,
  });
  const params = activationParams(plan, ranges);
  const qdq = buildQdqModel(model, params);
  const report: QuantizeReport = {
    recipe: INT8_RECIPE,
    convs: (graph.node ?? []).filter((n) => n.opType === 'Conv').length,
    adds: (graph.node ?? []).filter((n) => n.opType === 'Add').length,
    activations: params.size,
    ranges: Object.fromEntries(
      [...params].map(([t, p]) => [
        t,
        {
          ...(ranges.get(t) ?? ranges.get(plan.find((x) => x.tensor === t)?.sameAs ?? '') ?? { min: 0, max: 0 }),
          ...p,
        },
      ]),
    ),
  };
  return { bytes: encodeModel(qdq), report };
}

/**
 * The QDQ model again from recorded uint8 parameters (a feature cache keeps them): no calibration images, no
 * onnxruntime. With the same tapped graph and recipe it is byte-identical to the model they were recorded from.
 */
export function quantizeWithParams(
  tapped: Uint8Array,
  recorded: Readonly<Record<string, QuantParams>>,
  what = 'model',
): Uint8Array {
  const model = decodeModel(tapped, what);
  checkQuantisable(model, what);
  const plan = planActivations(model.graph as GraphProto);
  const missing = plan.filter((p) => !recorded[p.tensor]).map((p) => p.tensor);
  if (missing.length > 0)
    throw new Int8Unsupported(
      `the recorded ranges lack ${missing.length} of the graph's ${plan.length} activations (e.g. ${missing[0]})`,
    );
  // In activationParams' order (a MaxPool's input before its output), so the initialisers come out in the same order.
  const params = new Map<string, QuantParams>();
  const add = (t: string) => params.set(t, { scale: recorded[t]!.scale, zeroPoint: recorded[t]!.zeroPoint });
  for (const p of plan) {
    if (p.sameAs && !params.has(p.sameAs)) add(p.sameAs);
    if (!params.has(p.tensor)) add(p.tensor);
  }
  return encodeModel(buildQdqModel(model, params));
}
