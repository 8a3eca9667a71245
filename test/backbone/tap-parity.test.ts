import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as ort from '../../src/onnx/ort.js';
import { loadModel } from '../../src/backbone/graph.js';
import { FEATURE_OUTPUT, resolveTap, tapModel } from '../../src/backbone/tap.js';
import { needsShared, readFloat32, resnetDir, resnetModel } from '../support/helpers.js';

// Parity with PyTorch on a real ResNet50: slow (seconds), so apart from the tap's unit tests that mutation runs repeat.
describe('tap parity with PyTorch', () => {
  it(
    'ResNet50: tapped avgpool equals the PyTorch hook output (max abs <= 1e-4)',
    { skip: needsShared(resnetModel) },
    async () => {
      const { model } = await loadModel(resnetModel);
      const tap = resolveTap(model.graph!);
      assert.equal(tap.node, '/avgpool/GlobalAveragePool');
      const session = await ort.InferenceSession.create(tapModel(model, tap));
      const manifest = JSON.parse(fs.readFileSync(path.join(resnetDir, 'manifest.json'), 'utf8'));
      let worst = 0;
      for (const item of manifest.items) {
        const input = readFloat32(path.join(resnetDir, item.input.file));
        const expected = readFloat32(path.join(resnetDir, item.avgpool.file));
        const out = await session.run({ input: new ort.Tensor('float32', input, [1, 3, 224, 224]) });
        const got = out[FEATURE_OUTPUT]!.data as Float32Array;
        assert.equal(got.length, 2048);
        for (let i = 0; i < 2048; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]!));
      }
      assert.ok(worst <= 1e-4, `max abs diff ${worst}`);
    },
  );
});
