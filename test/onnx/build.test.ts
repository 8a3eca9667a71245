import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as ort from '../../src/onnx/ort.js';
import {
  DEFAULT_IR_VERSION,
  DEFAULT_OPSET,
  DataType,
  encodeModel,
  makeFloatAttribute,
  makeFloatTensor,
  makeInt64Tensor,
  makeIntAttribute,
  makeModel,
  makeNode,
  makeTensor,
  makeValueInfo,
  onnx,
  withGraph,
} from '../../src/onnx/build.js';

/** Encodes and decodes, so that assertions read what a file or onnxruntime would see. */
const roundTrip = (m: ReturnType<typeof makeModel>) => onnx.ModelProto.decode(encodeModel(m));

describe('ONNX kit: nodes and attributes', () => {
  it('names a node after its first output unless given a name, and keeps inputs, outputs and attributes', () => {
    const plain = makeNode('Add', ['a', 'b'], 'sum');
    assert.equal(plain.name, 'sum');
    assert.equal(plain.opType, 'Add');
    assert.deepEqual(plain.input, ['a', 'b']);
    assert.deepEqual(plain.output, ['sum']);
    assert.deepEqual(plain.attribute, []);
    const split = makeNode('Split', ['x'], ['left', 'right'], {
      name: 'halves',
      attributes: [makeIntAttribute('axis', 1)],
    });
    assert.equal(split.name, 'halves');
    assert.deepEqual(split.output, ['left', 'right']);
    assert.equal(split.attribute![0]!.name, 'axis');
  });

  it('copies the input and output lists, so a caller reusing its array cannot rewire the node', () => {
    const inputs = ['a'];
    const n = makeNode('Relu', inputs, 'y');
    inputs[0] = 'changed';
    assert.deepEqual(n.input, ['a']);
  });

  it('types attributes as INT and FLOAT, surviving an encode/decode', () => {
    const g = makeNode('Gemm', ['a', 'b'], 'c', {
      attributes: [makeIntAttribute('transA', 1), makeFloatAttribute('beta', 0.25)],
    });
    const decoded = onnx.NodeProto.decode(onnx.NodeProto.encode(g).finish());
    const [transA, beta] = decoded.attribute;
    assert.equal(transA!.type, onnx.AttributeProto.AttributeType.INT);
    assert.equal(Number(transA!.i), 1);
    assert.equal(beta!.type, onnx.AttributeProto.AttributeType.FLOAT);
    assert.equal(beta!.f, 0.25);
  });
});

describe('ONNX kit: tensors and value infos', () => {
  it('stores only the viewed bytes of a typed array that is a window on a larger buffer', () => {
    const whole = new Int32Array([1, 2, 3, 4, 5]);
    const t = makeTensor('w', DataType.INT32, [2], whole.subarray(1, 3));
    assert.equal(t.dataType, DataType.INT32);
    assert.deepEqual(t.dims, [2]);
    const raw = t.rawData!;
    assert.deepEqual(Array.from(new Int32Array(raw.slice().buffer)), [2, 3]);
  });

  it('rounds float tensors to float32 and writes int64 tensors as 8-byte integers', () => {
    const f = makeFloatTensor('f', [2], [0.1, 1e-30]);
    const floats = new Float32Array(f.rawData!.slice().buffer);
    assert.deepEqual(Array.from(floats), [Math.fround(0.1), Math.fround(1e-30)]);
    const i = makeInt64Tensor('i', [3], [0, -1, 2 ** 40]);
    assert.equal(i.dataType, DataType.INT64);
    assert.equal(i.rawData!.byteLength, 24);
    assert.deepEqual(Array.from(new BigInt64Array(i.rawData!.slice().buffer)), [0n, -1n, 2n ** 40n]);
  });

  it('gives value infos fixed and symbolic dimensions, or no shape at all', () => {
    const shaped = makeValueInfo('x', DataType.FLOAT, ['N', 3]);
    assert.deepEqual(shaped.type!.tensorType!.shape!.dim, [{ dimParam: 'N' }, { dimValue: 3 }]);
    const scalar = makeValueInfo('s', DataType.INT64, []);
    assert.equal(scalar.type!.tensorType!.elemType, DataType.INT64);
    assert.deepEqual(scalar.type!.tensorType!.shape!.dim, []);
    const open = makeValueInfo('o');
    assert.equal(open.type!.tensorType!.elemType, DataType.FLOAT);
    assert.equal(open.type!.tensorType!.shape, undefined);
  });
});

describe('ONNX kit: models', () => {
  it('builds a model that onnxruntime runs: initializers, int64 inputs of ops and attributes all read as meant', async () => {
    // y = Slice(Gemm(x, W, transB) * scale, [0], [2], axes [1]): exercises a float initializer, a float scalar, int64
    // initializers as op inputs, and INT and FLOAT attributes.
    const w = [1, 2, 3, 4, 5, 6]; // W [3, 2]: three outputs of two features (hence transB); Slice keeps two
    const m = makeModel({
      name: 'kit-test',
      nodes: [
        makeNode('Gemm', ['x', 'w'], 'g', {
          attributes: [makeIntAttribute('transB', 1), makeFloatAttribute('alpha', 2)],
        }),
        makeNode('Mul', ['g', 'scale'], 'scaled'),
        makeNode('Slice', ['scaled', 'starts', 'ends', 'axes'], 'y'),
      ],
      initializers: [
        makeFloatTensor('w', [3, 2], w),
        makeFloatTensor('scale', [], [0.5]),
        makeInt64Tensor('starts', [1], [0]),
        makeInt64Tensor('ends', [1], [2]),
        makeInt64Tensor('axes', [1], [1]),
      ],
      inputs: [makeValueInfo('x', DataType.FLOAT, ['N', 2])],
      outputs: [makeValueInfo('y', DataType.FLOAT, ['N', 2])],
    });
    const session = await ort.InferenceSession.create(encodeModel(m), { logSeverityLevel: 3 });
    try {
      const x = new Float32Array([1, 0, 0, 1, 1, 1]);
      const { y } = await session.run({ x: new ort.Tensor('float32', x, [3, 2]) });
      // Gemm with transB: g[i][j] = alpha · Σ_k x[i][k] · W[j][k], times scale, for the kept j < 2.
      const expected: number[] = [];
      for (let i = 0; i < 3; i++)
        for (let j = 0; j < 2; j++) expected.push(2 * 0.5 * (x[i * 2]! * w[j * 2]! + x[i * 2 + 1]! * w[j * 2 + 1]!));
      assert.deepEqual(y!.dims, [3, 2]);
      assert.deepEqual(Array.from(y!.data as Float32Array), expected);
    } finally {
      await session.release();
    }
  });

  it('declares the default opset and IR version unless told otherwise', () => {
    const empty = { name: 'g', nodes: [], inputs: [], outputs: [] };
    const plain = roundTrip(makeModel(empty));
    assert.equal(Number(plain.irVersion), DEFAULT_IR_VERSION);
    assert.deepEqual(
      plain.opsetImport.map((o) => [o.domain, Number(o.version)]),
      [['', DEFAULT_OPSET]],
    );
    const chosen = roundTrip(makeModel(empty, { opset: 17, irVersion: 9 }));
    assert.equal(Number(chosen.irVersion), 9);
    assert.equal(Number(chosen.opsetImport[0]!.version), 17);
  });

  it('withGraph replaces only the named graph fields and keeps the model around them', () => {
    const base = makeModel(
      {
        name: 'base',
        nodes: [makeNode('Relu', ['x'], 'y')],
        initializers: [makeFloatTensor('unused', [1], [1])],
        inputs: [makeValueInfo('x', DataType.FLOAT, [1])],
        outputs: [makeValueInfo('y', DataType.FLOAT, [1])],
      },
      { opset: 11 },
    );
    base.producerName = 'someone';
    base.metadataProps = [onnx.StringStringEntryProto.create({ key: 'k', value: 'v' })];
    const changed = roundTrip(withGraph(base, { node: [makeNode('Neg', ['x'], 'y')], initializer: [] }));
    assert.equal(changed.producerName, 'someone');
    assert.equal(changed.metadataProps[0]!.value, 'v');
    assert.equal(Number(changed.opsetImport[0]!.version), 11);
    const graph = changed.graph!;
    assert.equal(graph.name, 'base');
    assert.deepEqual(
      graph.node!.map((n) => n.opType),
      ['Neg'],
    );
    assert.equal(graph.initializer!.length, 0);
    assert.equal(graph.input![0]!.name, 'x');
    assert.equal(base.graph!.node![0]!.opType, 'Relu', 'the base model is left as it was');
  });
});
