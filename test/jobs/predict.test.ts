/** predict as a library function: what the CLI prints comes from here, so check the numbers here. */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { openBackbone } from '../../src/backbone/index.js';
import { loadTf } from '../../src/head/runtime.js';
import { loadHead } from '../../src/head/saved.js';
import { decodeBatch } from '../../src/image/batch.js';
import { getPreset } from '../../src/image/presets.js';
import { expandInputs, predict } from '../../src/jobs/predict.js';
import { DEFAULT_IMAGE_POLICY } from '../../src/image/presets.js';
import { plainProbabilities } from '../support/head-reference.js';
import { runCli, tempDir, writeColourFolder, writeTinyModel } from '../support/helpers.js';

/** A saved head on raw features in float64, from its files (test/support/head-reference.ts). */
async function plainHead(headDir: string, raw: Float32Array, count: number): Promise<Float64Array> {
  return (await plainProbabilities(headDir, raw, count)).probabilities;
}

describe('predict (library)', () => {
  let dir: string;
  let head: string;
  before(async () => {
    dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 4);
    const cache = path.join(dir, 'cache');
    for (const split of ['train', 'val']) {
      const r = await runCli([
        'extract',
        '--data',
        path.join(dir, 'data'),
        '--split',
        split,
        '--model',
        model,
        '--cache',
        cache,
        '--device',
        'cpu',
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    head = path.join(dir, 'head');
    const t = await runCli([
      'train-head',
      '--cache',
      cache,
      '--head',
      head,
      '--epochs',
      '20',
      '--lr',
      '0.05',
      '--normalize',
      'standard',
    ]);
    assert.equal(t.code, 0, t.stderr);
  });

  it("gives each image the head's probabilities on the backbone's features, sorted, top-k", async () => {
    const files = (await expandInputs([path.join(dir, 'data', 'val')])).files;
    const r = await predict({ inputs: files, head, top: 2, device: 'cpu' });
    assert.equal(r.failed, 0);
    assert.deepEqual(
      r.predictions.map((p) => p.path),
      files,
      'input order',
    );

    // Recompute independently: decode → backbone → the head's normalisation → the head.
    const { tf } = await loadTf('auto');
    const loaded = await loadHead(tf, head);
    const preset = getPreset(String(loaded.info.provenance.preset.name));
    const backbone = await openBackbone(loaded.info.provenance.modelFile, { device: { kind: 'cpu' }, threads: 1 });
    try {
      const batch = await decodeBatch(files, (f) => Promise.resolve({ bytes: f, stamp: null }), {
        preset,
        policy: DEFAULT_IMAGE_POLICY,
        layout: backbone.input.layout,
      });
      const features = await backbone.extract(batch.pixels, files.length, preset.crop);
      // The head applied here in float64 from its files (not loadHead's predict, which predict itself uses).
      const probabilities = await plainHead(head, features, files.length);
      const classes = loaded.info.classes;
      for (const [row, p] of r.predictions.entries()) {
        assert.equal(p.top.length, 2);
        const expected = classes
          .map((c, k) => ({ label: c, probability: probabilities[row * classes.length + k]! }))
          .sort((a, b) => b.probability - a.probability)
          .slice(0, 2);
        assert.deepEqual(
          p.top.map((t) => t.label),
          expected.map((e) => e.label),
          p.path,
        );
        for (const [k, t] of p.top.entries()) assert.ok(Math.abs(t.probability - expected[k]!.probability) < 1e-6);
        assert.ok(p.top[0]!.probability >= p.top[1]!.probability);
      }
      const correct = r.predictions.filter((p) => p.top[0]!.label === path.basename(path.dirname(p.path))).length;
      assert.ok(correct >= files.length - 1, `colour classes are separable: ${correct}/${files.length}`);
    } finally {
      await backbone.close();
      loaded.dispose();
    }
  });

  it('validates its options by name', async () => {
    await assert.rejects(
      predict({ inputs: ['x'], head, top: 0 }),
      /^FeatcacheError: top: expected a positive integer, got 0/,
    );
    await assert.rejects(predict({ inputs: ['x'], head, device: 'gpu' }), /^FeatcacheError: device: expected one of/);
  });
});
