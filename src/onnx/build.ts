/**
 * The one place featcache builds ONNX: nodes with attributes, initializers, value infos, small models, and a graph
 * rewritten inside its model. Backbone surgery (tap, fp16, int8, calibration), the exported head and the head's
 * onnxruntime graphs all build through here, so a node or tensor is spelled one way. The protobuf types are ONNX's own
 * schema (onnx-proto), so every field we do not touch survives a decode and re-encode.
 */
import onnxProto from 'onnx-proto';

/** @internal */
export const { onnx } = onnxProto;
/** @internal */
export type ModelProto = onnxProto.onnx.ModelProto;
/** @internal */
export type GraphProto = onnxProto.onnx.IGraphProto;
/** @internal */
export type NodeProto = onnxProto.onnx.INodeProto;
/** @internal */
export type AttributeProto = onnxProto.onnx.IAttributeProto;
/** @internal */
export type TensorProto = onnxProto.onnx.ITensorProto;
/** @internal */
export type ValueInfoProto = onnxProto.onnx.IValueInfoProto;

/** ONNX element types (TensorProto.DataType): FLOAT, FLOAT16, INT8, UINT8, INT32, INT64, … */
/** @internal */
export const DataType = onnx.TensorProto.DataType;

/** Opset and IR version of the small graphs featcache writes from scratch (onnxruntime ≥ 1.8 runs both). */
/** @internal */
export const DEFAULT_OPSET = 13;
/** @internal */
export const DEFAULT_IR_VERSION = 8;

/** @internal */
export function makeIntAttribute(name: string, value: number): AttributeProto {
  return onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: value });
}

/** @internal */
export function makeFloatAttribute(name: string, value: number): AttributeProto {
  return onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.FLOAT, f: value });
}

/** @internal */
export interface NodeOptions {
  /** The node's name; default: its first output, which a graph already keeps unique. */
  name?: string;
  attributes?: AttributeProto[];
}

/** @internal */
export function makeNode(
  opType: string,
  inputs: readonly string[],
  outputs: string | readonly string[],
  options: NodeOptions = {},
): NodeProto {
  const output = typeof outputs === 'string' ? [outputs] : [...outputs];
  return onnx.NodeProto.create({
    name: options.name ?? output[0],
    opType,
    input: [...inputs],
    output,
    attribute: options.attributes ?? [],
  });
}

/**
 * An initializer holding `data`'s bytes as raw_data. ONNX's raw_data is little-endian, as are the typed arrays of
 * every platform onnxruntime-node ships for.
 */
/** @internal */
export function makeTensor(
  name: string,
  dataType: number,
  dims: readonly number[],
  data: ArrayBufferView,
): TensorProto {
  return onnx.TensorProto.create({
    name,
    dataType,
    dims: [...dims],
    rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  });
}

/** A float32 initializer; `values` are rounded to float32. */
/** @internal */
export function makeFloatTensor(name: string, dims: readonly number[], values: ArrayLike<number>): TensorProto {
  return makeTensor(name, DataType.FLOAT, dims, Float32Array.from(values));
}

/** An int64 initializer (shapes, axes, slice bounds). */
/** @internal */
export function makeInt64Tensor(name: string, dims: readonly number[], values: readonly number[]): TensorProto {
  return makeTensor(
    name,
    DataType.INT64,
    dims,
    BigInt64Array.from(values, (v) => BigInt(v)),
  );
}

/** One dimension of a value info: a fixed size, or a symbolic name such as 'N'. */
/** @internal */
export type ShapeDim = number | string;

/** A graph input or output; without `dims` the shape is left for onnxruntime to infer. */
/** @internal */
export function makeValueInfo(
  name: string,
  elemType: number = DataType.FLOAT,
  dims?: readonly ShapeDim[],
): ValueInfoProto {
  const shape = dims && { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) };
  return onnx.ValueInfoProto.create({ name, type: { tensorType: shape ? { elemType, shape } : { elemType } } });
}

/** @internal */
export interface GraphParts {
  name: string;
  nodes: NodeProto[];
  initializers?: TensorProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
}

/** @internal */
export interface ModelOptions {
  /** Default DEFAULT_OPSET. */
  opset?: number;
  /** Default DEFAULT_IR_VERSION. */
  irVersion?: number;
}

/** A model of one graph in the default ONNX domain. */
/** @internal */
export function makeModel(graph: GraphParts, options: ModelOptions = {}): ModelProto {
  return onnx.ModelProto.create({
    irVersion: options.irVersion ?? DEFAULT_IR_VERSION,
    opsetImport: [{ domain: '', version: options.opset ?? DEFAULT_OPSET }],
    graph: onnx.GraphProto.create({
      name: graph.name,
      node: graph.nodes,
      initializer: graph.initializers ?? [],
      input: graph.inputs,
      output: graph.outputs,
    }),
  });
}

/** `base` with parts of its graph replaced; its opsets, metadata and every other graph field are kept. */
/** @internal */
export function withGraph(base: ModelProto, changes: Partial<GraphProto>): ModelProto {
  const graph = onnx.GraphProto.create({ ...base.graph, ...changes });
  return onnx.ModelProto.create({ ...base, graph });
}

/** @internal */
export function encodeModel(m: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(m).finish();
}
