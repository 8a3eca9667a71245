/**
 * Reading and describing ONNX graphs. Decoding uses ONNX's own protobuf schema (onnx-proto) rather than a
 * hand-rolled parser, so every field we do not touch survives re-encoding.
 */
import * as fs from 'node:fs/promises';
import { FeatcacheError, missingModel, optionName } from '../errors.js';
import * as kit from '../onnx/build.js';

// The protobuf schema and its encoder live in the ONNX kit (src/onnx/build.ts); re-exported for readers of graphs.
/** @internal */
export const { onnx, encodeModel } = kit;
/** @internal */
export type ModelProto = kit.ModelProto;
/** @internal */
export type NodeProto = kit.NodeProto;
/** @internal */
export type GraphProto = kit.GraphProto;
/** @internal */
export type AttributeProto = kit.AttributeProto;
/** @internal */
export type TensorProto = kit.TensorProto;

export type Dim = number | string | null;

export interface TensorInfo {
  name: string;
  elemType: string;
  shape: Dim[] | null;
}

/** @internal */
export async function loadModel(file: string): Promise<{ model: ModelProto; bytes: Buffer }> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw missingModel(file);
    throw new FeatcacheError(`${optionName('model')} ${file}: cannot read (${code ?? String(error)})`);
  }
  return { model: decodeModel(bytes, file), bytes };
}

/** @internal */
export function decodeModel(bytes: Uint8Array, file: string): ModelProto {
  let model: ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (error) {
    throw new FeatcacheError(
      `${optionName('model')} ${file}: not an ONNX model (protobuf decode failed: ${(error as Error).message})`,
    );
  }
  if (!model.graph || !model.graph.node || model.graph.node.length === 0) {
    throw new FeatcacheError(`${optionName('model')} ${file}: not an ONNX model (no graph nodes found)`);
  }
  return model;
}

const elemTypeNames: Record<number, string> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  9: 'bool',
  10: 'float16',
  11: 'float64',
};

function valueInfoToTensorInfo(info: kit.ValueInfoProto): TensorInfo {
  const tensorType = info.type?.tensorType;
  const dims = tensorType?.shape?.dim;
  return {
    name: info.name ?? '',
    elemType: elemTypeNames[tensorType?.elemType ?? 0] ?? `type${tensorType?.elemType}`,
    shape: dims ? dims.map((d) => (d.dimParam ? d.dimParam : d.dimValue != null ? Number(d.dimValue) : null)) : null,
  };
}

/** Graph inputs that are real inputs (older exporters also list initializers as inputs). */
/** @internal */
export function graphInputs(graph: GraphProto): TensorInfo[] {
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  return (graph.input ?? []).filter((i) => !initializers.has(i.name)).map(valueInfoToTensorInfo);
}

/** @internal */
export function graphOutputs(graph: GraphProto): TensorInfo[] {
  return (graph.output ?? []).map(valueInfoToTensorInfo);
}

/** Map from tensor name to the nodes that consume it. */
/** @internal */
export function consumersOf(graph: GraphProto): Map<string, NodeProto[]> {
  const consumers = new Map<string, NodeProto[]>();
  for (const node of graph.node ?? []) {
    for (const input of node.input ?? []) {
      const list = consumers.get(input) ?? [];
      list.push(node);
      consumers.set(input, list);
    }
  }
  return consumers;
}

/** Number of nodes between a tensor and the nearest graph output (Infinity if it never reaches one). */
/** @internal */
export function distanceToOutput(graph: GraphProto, tensor: string): number {
  const outputs = new Set((graph.output ?? []).map((o) => o.name));
  const consumers = consumersOf(graph);
  const seen = new Set<string>([tensor]);
  let frontier = [tensor];
  for (let depth = 0; frontier.length > 0; depth++) {
    if (frontier.some((t) => outputs.has(t))) return depth;
    const next: string[] = [];
    for (const t of frontier) {
      for (const node of consumers.get(t) ?? []) {
        for (const out of node.output ?? []) {
          if (!seen.has(out)) {
            seen.add(out);
            next.push(out);
          }
        }
      }
    }
    frontier = next;
  }
  return Number.POSITIVE_INFINITY;
}

/** @internal */
export function initializerInts(graph: GraphProto, name: string): number[] | null {
  const init = (graph.initializer ?? []).find((t) => t.name === name);
  if (!init) return null;
  if (init.int64Data && init.int64Data.length > 0) return init.int64Data.map(Number);
  if (init.int32Data && init.int32Data.length > 0) return init.int32Data.map(Number);
  if (init.rawData && init.rawData.length > 0) {
    const raw = init.rawData;
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out: number[] = [];
    for (let i = 0; i + 8 <= raw.byteLength; i += 8) out.push(Number(view.getBigInt64(i, true)));
    return out;
  }
  return [];
}

/** @internal */
export function intsAttribute(node: NodeProto, name: string): number[] | null {
  const attribute = (node.attribute ?? []).find((a) => a.name === name);
  if (!attribute) return null;
  return (attribute.ints ?? []).map(Number);
}
