/**
 * Optional fp16 execution of the backbone (for GPUs): float initializers and constants become float16, the image
 * input is cast to float16 on entry and the tapped tensor back to float32 on exit, so callers still see float32.
 */
import { FeatcacheError } from '../errors.js';
import { type GraphProto, type ModelProto, type NodeProto, type TensorProto } from './graph.js';
import { DataType, makeIntAttribute, makeNode, withGraph } from '../onnx/build.js';
import { FEATURE_OUTPUT } from './tap.js';

const FLOAT = DataType.FLOAT;
const FLOAT16 = DataType.FLOAT16;

/** IEEE 754 binary16 bits of a number, rounding to nearest even; overflow becomes infinity. */
export function toHalfBits(value: number): number {
  const f32 = new Float32Array([value]);
  const bits = new Uint32Array(f32.buffer)[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    const half = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const midpoint = 1 << (shift - 1);
    return sign | (half + (rest > midpoint || (rest === midpoint && half & 1) ? 1 : 0));
  }
  const half = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  return sign | (half + (rest > 0x1000 || (rest === 0x1000 && half & 1) ? 1 : 0));
}

export function fromHalfBits(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

function floatValues(tensor: TensorProto): Float32Array {
  if (tensor.floatData && tensor.floatData.length > 0) return Float32Array.from(tensor.floatData);
  const raw = tensor.rawData ?? new Uint8Array();
  return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
}

function toHalfTensor(tensor: TensorProto): TensorProto {
  const values = floatValues(tensor);
  const halves = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) halves[i] = toHalfBits(values[i]!);
  return { ...tensor, dataType: FLOAT16, floatData: [], rawData: new Uint8Array(halves.buffer) };
}

/** Inputs that ONNX requires in float32 whatever the data type (Resize/Upsample scales). */
function float32OnlyInputs(graph: GraphProto): Set<string> {
  const keep = new Set<string>();
  for (const node of graph.node ?? []) {
    if (node.opType === 'Resize' && node.input?.[2]) keep.add(node.input[2]);
    if (node.opType === 'Upsample' && node.input?.[1]) keep.add(node.input[1]);
  }
  return keep;
}

function castNode(input: string, output: string, to: number): NodeProto {
  return makeNode('Cast', [input], output, {
    name: `featcache/Cast_${output}`,
    attributes: [makeIntAttribute('to', to)],
  });
}

/** Converts a tapped model (output FEATURE_OUTPUT) to run in float16 while taking and returning float32. */
/** @internal */
export function toFloat16(model: ModelProto): ModelProto {
  const graph = model.graph as GraphProto;
  if ((graph.node ?? []).some((n) => (n.opType ?? '').startsWith('QLinear') || n.opType === 'QuantizeLinear')) {
    throw new FeatcacheError('--fp16: the model is quantised (int8); fp16 applies to float models only');
  }
  const keep = float32OnlyInputs(graph);
  const imageInput = (graph.input ?? []).find((i) => !(graph.initializer ?? []).some((t) => t.name === i.name));
  if (!imageInput?.name) throw new FeatcacheError('--fp16: the model has no image input');
  const halfInput = `${imageInput.name}__fp16`;
  const halfOutput = `${FEATURE_OUTPUT}__fp16`;
  const nodes = (graph.node ?? []).map((node) => {
    const converted: NodeProto = {
      ...node,
      input: (node.input ?? []).map((i) => (i === imageInput.name ? halfInput : i)),
      output: (node.output ?? []).map((o) => (o === FEATURE_OUTPUT ? halfOutput : o)),
    };
    if (node.opType === 'Constant') {
      converted.attribute = (node.attribute ?? []).map((a) =>
        a.t && a.t.dataType === FLOAT ? { ...a, t: toHalfTensor(a.t) } : a,
      );
    }
    if (node.opType === 'Cast') {
      converted.attribute = (node.attribute ?? []).map((a) =>
        a.name === 'to' && Number(a.i) === (FLOAT as number) ? { ...a, i: FLOAT16 } : a,
      );
    }
    return converted;
  });
  return withGraph(model, {
    node: [castNode(imageInput.name, halfInput, FLOAT16), ...nodes, castNode(halfOutput, FEATURE_OUTPUT, FLOAT)],
    initializer: (graph.initializer ?? []).map((t) =>
      t.dataType === FLOAT && !keep.has(t.name ?? '') ? toHalfTensor(t) : t,
    ),
    // Intermediate types changed; let onnxruntime infer them again.
    valueInfo: [],
  });
}
