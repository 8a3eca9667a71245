import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { decodeModel, loadModel, onnx } from '../../src/backbone/graph.js';
import { FEATURE_OUTPUT, modulePathOfNode, resolveTap, tapModel } from '../../src/backbone/tap.js';
import { FeatcacheError } from '../../src/errors.js';
import { mobilenetModel, needsShared, tinyModel } from '../support/helpers.js';
import { decode, exposeTensor, initializerScalar, nodeOfType, twoPoolModel, twoPoolReference } from '../support/models.js';

async function runTapped(bytes: Uint8Array, input: Float32Array, dims: number[]): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(bytes);
  const out = await session.run({ input: new ort.Tensor('float32', input, dims) });
  await session.release();
  return out[FEATURE_OUTPUT]!;
}

describe('tap', () => {
  for (const pool of ['GlobalAveragePool', 'ReduceMean13', 'ReduceMean18'] as const) {
    it(`finds a ${pool} pool and returns per-channel means as [N, C]`, async () => {
      const model = decodeModel(tinyModel({ pool, size: 8 }), 'tiny.onnx');
      const tap = resolveTap(model.graph!);
      assert.equal(tap.tensor, 'pooled');
      assert.equal(tap.matchedBy, 'auto-pool');
      const input = new Float32Array(2 * 3 * 64).map((_, i) => (i % 64) - 10);
      const out = await runTapped(tapModel(model, tap), input, [2, 3, 8, 8]);
      assert.deepEqual(out.dims, [2, 3]);
      // Relu then mean over 64 values -10..53: (sum of 1..53) / 64.
      const expected = (53 * 54) / 2 / 64;
      for (const v of out.data as Float32Array) assert.ok(Math.abs(v - expected) < 1e-4);
    });
  }

  for (const spec of ['avgpool', 'auto']) {
    it(`--tap ${spec} takes the pool nearest the output when an earlier pool also reaches it`, async () => {
      const size = 6;
      const model = decodeModel(twoPoolModel(size), 'two-pools.onnx');
      const tap = resolveTap(model.graph!, spec);
      assert.equal(tap.node, '/avgpool/GlobalAveragePool');
      assert.equal(tap.tensor, 'late');
      // Per-channel means m spread over (0.1, 0.9), so the late pool (m²) and the early pool (m) differ clearly;
      // the sine dips below zero, so the Relu matters too.
      const plane = size * size;
      const input = new Float32Array(2 * 3 * plane).map((_, i) => 0.15 * (Math.floor(i / plane) + 1) + 0.3 * Math.sin(i));
      const reference = twoPoolReference(input, 2, size);
      const got = (await runTapped(tapModel(model, tap), input, [2, 3, size, size])).data as Float32Array;
      assert.equal(got.length, 6);
      for (let k = 0; k < 6; k++) {
        assert.ok(Math.abs(reference.late[k]! - reference.early[k]!) > 0.05, 'the two pools are told apart by this input');
        assert.ok(Math.abs(got[k]! - reference.late[k]!) < 1e-5, `feature ${k}: ${got[k]} vs m² = ${reference.late[k]}`);
      }
    });
  }

  it('drops the classifier: the tapped graph has no MatMul and one output', () => {
    const model = decodeModel(tinyModel({ size: 8 }), 'tiny.onnx');
    const tapped = decodeModel(tapModel(model, resolveTap(model.graph!)), 'tapped');
    assert.deepEqual(tapped.graph!.output!.map((o) => o.name), [FEATURE_OUTPUT]);
    assert.ok(!tapped.graph!.node!.some((n) => n.opType === 'MatMul'));
    assert.ok(!tapped.graph!.initializer!.some((t) => t.name === 'fc.weight'));
  });

  it('accepts a node name, a tensor name and a PyTorch module path', () => {
    const graph = decodeModel(tinyModel({ size: 8 }), 'tiny.onnx').graph!;
    assert.equal(resolveTap(graph, '/features/Relu').tensor, '/features/Relu_output_0');
    assert.equal(resolveTap(graph, '/features/Relu_output_0').matchedBy, 'tensor');
    const byModule = resolveTap(graph, 'features');
    assert.equal(byModule.matchedBy, 'module');
    assert.equal(byModule.tensor, '/features/Relu_output_0');
  });

  it('maps torch.onnx node names to module paths', () => {
    assert.equal(modulePathOfNode('/layer4/layer4.2/relu_2/Relu'), 'layer4.2.relu_2');
    assert.equal(modulePathOfNode('/avgpool/GlobalAveragePool'), 'avgpool');
    assert.equal(modulePathOfNode('Conv_0'), null);
  });

  it('lists candidates when nothing can be tapped', () => {
    const graph = decodeModel(tinyModel({ pool: 'none', size: 8 }), 'tiny.onnx').graph!;
    assert.throws(() => resolveTap(graph, 'auto'), (e: FeatcacheError) => /no global average pool/.test(e.message) && /features/.test(e.message));
    assert.throws(() => resolveTap(graph, 'layer9'), (e: FeatcacheError) => e.message.startsWith('--tap layer9:'));
  });

  it('refuses a file that is not ONNX with a one-line error', () => {
    assert.throws(() => decodeModel(Buffer.from('hello, I am text'), 'notes.onnx'), (e: FeatcacheError) => /--model notes.onnx: not an ONNX model/.test(e.message));
  });

  it('MobileNetV2-int8: features are the pool\'s uint8 output dequantised with its output scale and zero point', { skip: needsShared(mobilenetModel) }, async () => {
    const { model, bytes } = await loadModel(mobilenetModel);
    const tap = resolveTap(model.graph!);
    assert.equal(tap.opType, 'QLinearGlobalAveragePool');
    // The reference reads the pool node and its initializers straight from the file, not through the tap.
    const reference = decode(bytes);
    const pool = nodeOfType(reference, 'QLinearGlobalAveragePool');
    const [, inScale, inZeroPoint, outScale, outZeroPoint] = pool.input;
    const scale = initializerScalar(reference, outScale!);
    const zeroPoint = initializerScalar(reference, outZeroPoint!);
    assert.ok(Math.abs(initializerScalar(reference, inScale!) - scale) > 1e-3 || initializerScalar(reference, inZeroPoint!) !== zeroPoint,
      'input and output quantisation differ, so using the wrong pair would show');
    const input = new Float32Array(2 * 3 * 224 * 224).map((_, i) => Math.sin(i / 1000) * (i < 3 * 224 * 224 ? 1 : 2));
    const dims = [2, 3, 224, 224];
    const untapped = await ort.InferenceSession.create(exposeTensor(bytes, pool.output[0]!, onnx.TensorProto.DataType.UINT8));
    const raw = (await untapped.run({ input: new ort.Tensor('float32', input, dims) }))[pool.output[0]!]!;
    await untapped.release();
    assert.equal(raw.type, 'uint8');
    const quantised = raw.data as Uint8Array;
    assert.equal(quantised.length, 2 * 1280);
    assert.ok(new Set(quantised).size > 20, 'the pooled values are spread, not constant');
    const out = await runTapped(tapModel(model, tap), input, dims);
    assert.deepEqual(out.dims, [2, 1280]);
    assert.equal(out.type, 'float32');
    const got = out.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - (quantised[i]! - zeroPoint) * scale));
    assert.ok(worst <= 1e-6, `max abs diff from (q - ${zeroPoint}) × ${scale}: ${worst}`);
  });
});
