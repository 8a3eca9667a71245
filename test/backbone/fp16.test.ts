import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { toFloat16, fromHalfBits, toHalfBits } from '../../src/backbone/fp16.js';
import { decodeModel, loadModel, onnx } from '../../src/backbone/graph.js';
import { openBackbone } from '../../src/backbone/index.js';
import { FEATURE_OUTPUT, resolveTap, tappedModel } from '../../src/backbone/tap.js';
import {
  cosine,
  mobilenetModel,
  needsShared,
  readFloat32,
  resnetDir,
  resnetModel,
  tinyModel,
} from '../support/helpers.js';

describe('fp16 conversion', () => {
  it('converts numbers to IEEE half precision, rounding to nearest even', () => {
    assert.equal(toHalfBits(1), 0x3c00);
    assert.equal(toHalfBits(-2), 0xc000);
    assert.equal(toHalfBits(65504), 0x7bff);
    assert.equal(toHalfBits(1e6), 0x7c00, 'overflow → infinity');
    assert.equal(toHalfBits(2 ** -24), 0x0001, 'smallest subnormal');
    assert.equal(toHalfBits(1 + 2 ** -11), 0x3c00, 'tie rounds to even');
    for (const v of [0.1, -3.14159, 1234.5, 6.1e-5])
      assert.ok(Math.abs(fromHalfBits(toHalfBits(v)) - v) <= Math.abs(v) * 2 ** -11);
  });

  it('casts the input to fp16 and the tapped output back to fp32, with fp16 weights', () => {
    const model = decodeModel(tinyModel({ size: 8 }), 'tiny');
    const half = toFloat16(tappedModel(model, resolveTap(model.graph!)));
    const nodes = half.graph!.node!;
    assert.equal(nodes[0]!.opType, 'Cast');
    assert.deepEqual(nodes[0]!.input, ['input']);
    assert.equal(nodes.at(-1)!.opType, 'Cast');
    assert.deepEqual(nodes.at(-1)!.output, [FEATURE_OUTPUT]);
    assert.equal(Number(nodes.at(-1)!.attribute![0]!.i), onnx.TensorProto.DataType.FLOAT);
    assert.ok(!nodes.slice(1, -1).some((n) => n.input!.includes('input')), 'inner nodes read the fp16 input');
  });

  it('refuses quantised models', { skip: needsShared(mobilenetModel) }, async () => {
    const { model } = await loadModel(mobilenetModel);
    assert.throws(() => toFloat16(tappedModel(model, resolveTap(model.graph!))), /--fp16: the model is quantised/);
  });

  it(
    'ResNet50 in fp16 gives features within fp16 precision of fp32 (run here on CPU)',
    { skip: needsShared(resnetModel) },
    async () => {
      const manifest = JSON.parse(fs.readFileSync(path.join(resnetDir, 'manifest.json'), 'utf8'));
      const input = readFloat32(path.join(resnetDir, manifest.items[0].input.file));
      const expected = readFloat32(path.join(resnetDir, manifest.items[0].avgpool.file));
      const half = await openBackbone(resnetModel, { device: { kind: 'cpu' }, threads: 2, fp16: true });
      assert.equal(half.precision, 'fp16');
      const features = await half.extract(Float32Array.from(input), 1, 224);
      await half.close();
      assert.ok(features instanceof Float32Array && features.length === 2048);
      const mean = (v: ArrayLike<number>) => Array.from(v).reduce((s, x) => s + x, 0) / v.length;
      const centre = (v: ArrayLike<number>) => Array.from(v, (x) => x - mean(v));
      assert.ok(cosine(centre(features), centre(expected)) > 0.99, 'centred cosine vs the PyTorch hook');
    },
  );
});
