/**
 * ONNX models and model surgery for tests that check numbers against an independent reference. Built with
 * onnx-proto directly (not with src/backbone helpers), so a bug in the code under test cannot also bend the reference.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type Model = onnxProto.onnx.ModelProto;
type Tensor = onnxProto.onnx.ITensorProto;

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const int = (name: string, value: number) =>
  onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: value });
const tensorType = (elemType: number, dim: object[]) => ({ tensorType: { elemType, shape: { dim } } });

/**
 * Two global average pools on the way to the output, like a squeeze-and-excitation block followed by the
 * classifier's pool:
 *
 *   input [N,3,S,S] → Relu → A;  early = GlobalAveragePool(A);  B = A × early;  late = GlobalAveragePool(B)
 *   → Flatten → MatMul(3×4) → logits
 *
 * The early pool is listed first and is farther from the output. Per channel, with m = mean(relu(x)):
 * early = m and late = m² — so which pool was tapped shows in the numbers (see `twoPoolReference`).
 */
export function twoPoolModel(size = 8): Uint8Array {
  const batch = { dimParam: 'N' };
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'two-pools',
      node: [
        onnx.NodeProto.create({ name: '/features/Relu', opType: 'Relu', input: ['input'], output: ['A'] }),
        onnx.NodeProto.create({
          name: '/se/GlobalAveragePool',
          opType: 'GlobalAveragePool',
          input: ['A'],
          output: ['early'],
        }),
        onnx.NodeProto.create({ name: '/se/Mul', opType: 'Mul', input: ['A', 'early'], output: ['B'] }),
        onnx.NodeProto.create({
          name: '/avgpool/GlobalAveragePool',
          opType: 'GlobalAveragePool',
          input: ['B'],
          output: ['late'],
        }),
        onnx.NodeProto.create({
          name: '/Flatten',
          opType: 'Flatten',
          input: ['late'],
          output: ['flat'],
          attribute: [int('axis', 1)],
        }),
        onnx.NodeProto.create({
          name: '/fc/MatMul',
          opType: 'MatMul',
          input: ['flat', 'fc.weight'],
          output: ['logits'],
        }),
      ],
      initializer: [
        onnx.TensorProto.create({
          name: 'fc.weight',
          dataType: FLOAT,
          dims: [3, 4],
          floatData: [1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1],
        }),
      ],
      input: [
        { name: 'input', type: tensorType(FLOAT, [batch, { dimValue: 3 }, { dimValue: size }, { dimValue: size }]) },
      ],
      output: [{ name: 'logits', type: tensorType(FLOAT, [batch, { dimValue: 4 }]) }],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** What each pool of `twoPoolModel` yields for an NCHW input, computed in plain JS: [N × 3] each. */
export function twoPoolReference(
  input: Float32Array,
  n: number,
  size: number,
): { early: Float64Array; late: Float64Array } {
  const plane = size * size;
  const early = new Float64Array(n * 3);
  const late = new Float64Array(n * 3);
  for (let k = 0; k < n * 3; k++) {
    let sum = 0;
    for (let p = 0; p < plane; p++) sum += Math.max(0, input[k * plane + p]!);
    early[k] = sum / plane;
    late[k] = early[k]! ** 2;
  }
  return { early, late };
}

/** The model with `tensor` added as an extra graph output, so an ordinary run shows its raw value. */
export function exposeTensor(bytes: Uint8Array, tensor: string, elemType: number): Uint8Array {
  const model = onnx.ModelProto.decode(bytes);
  model.graph!.output!.push(onnx.ValueInfoProto.create({ name: tensor, type: { tensorType: { elemType } } }));
  return onnx.ModelProto.encode(model).finish();
}

export function decode(bytes: Uint8Array): Model {
  return onnx.ModelProto.decode(bytes);
}

/** A scalar initializer's value, whichever field holds it (typed field or little-endian raw bytes). */
export function initializerScalar(model: Model, name: string): number {
  const init: Tensor | undefined = (model.graph?.initializer ?? []).find((t) => t.name === name);
  if (!init) throw new Error(`no initializer ${name}`);
  const type = onnx.TensorProto.DataType;
  if (init.floatData && init.floatData.length > 0) return init.floatData[0]!;
  if (init.int32Data && init.int32Data.length > 0) return init.int32Data[0]!;
  const raw = init.rawData;
  if (!raw || raw.length === 0) throw new Error(`initializer ${name} holds no data`);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (init.dataType) {
    case type.FLOAT:
      return view.getFloat32(0, true);
    case type.UINT8:
      return view.getUint8(0);
    case type.INT8:
      return view.getInt8(0);
    default:
      throw new Error(`initializer ${name}: data type ${init.dataType} not handled`);
  }
}

/** The (single) node of an op type, with its inputs, e.g. MobileNet's QLinearGlobalAveragePool. */
export function nodeOfType(model: Model, opType: string): { name: string; input: string[]; output: string[] } {
  const nodes = (model.graph?.node ?? []).filter((n) => n.opType === opType);
  if (nodes.length !== 1) throw new Error(`expected one ${opType} node, found ${nodes.length}`);
  return { name: nodes[0]!.name ?? '', input: nodes[0]!.input ?? [], output: nodes[0]!.output ?? [] };
}
