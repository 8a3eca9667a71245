/**
 * Issue 27 items 7–8: non-finite numbers are failures, never results. An image whose features are NaN is that
 * image's failure (ledger, exit 3); train-head refuses non-finite inputs naming the rows, and a diverged fit naming
 * the setting.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { encodeModel, onnx } from '../../src/backbone/graph.js';
import { ensureManifest } from '../../src/store/manifest.js';
import { writePart } from '../../src/store/part.js';
import { runCli, tempDir, writeColourImage } from '../support/helpers.js';
import { writeSyntheticCache } from '../support/synthetic-cache.js';

/**
 * input → Sqrt → GlobalAveragePool → Flatten → MatMul: the pooled feature is NaN for any image with a pixel below
 * the preset's mean in some channel (sqrt of a negative), finite for near-white images.
 */
function sqrtModel(): Uint8Array {
  const float = onnx.TensorProto.DataType.FLOAT;
  const type = (dim: object[]) => ({ tensorType: { elemType: float, shape: { dim } } });
  return encodeModel(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 13 }],
      graph: {
        name: 'sqrt',
        node: [
          onnx.NodeProto.create({ name: '/features/Sqrt', opType: 'Sqrt', input: ['input'], output: ['rooted'] }),
          onnx.NodeProto.create({
            name: '/avgpool/GlobalAveragePool',
            opType: 'GlobalAveragePool',
            input: ['rooted'],
            output: ['pooled'],
          }),
          onnx.NodeProto.create({
            name: '/Flatten',
            opType: 'Flatten',
            input: ['pooled'],
            output: ['flat'],
            attribute: [
              onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 1 }),
            ],
          }),
          onnx.NodeProto.create({
            name: '/fc/MatMul',
            opType: 'MatMul',
            input: ['flat', 'fc.weight'],
            output: ['logits'],
          }),
        ],
        initializer: [
          onnx.TensorProto.create({ name: 'fc.weight', dataType: float, dims: [3, 2], floatData: [1, 0, 0, 1, 1, 1] }),
        ],
        input: [
          { name: 'input', type: type([{ dimParam: 'N' }, { dimValue: 3 }, { dimValue: 224 }, { dimValue: 224 }]) },
        ],
        output: [{ name: 'logits', type: type([{ dimParam: 'N' }, { dimValue: 2 }]) }],
      },
    }),
  );
}

describe('non-finite features are failures (issue 27, items 7–8)', () => {
  it('extract: NaN features are ledger failures (exit 3); predict answers no probability for them (exit 3)', async () => {
    const dir = await tempDir();
    const model = path.join(dir, 'sqrt.onnx');
    await fs.writeFile(model, sqrtModel());
    const data = path.join(dir, 'data');
    for (let i = 0; i < 4; i++) {
      await writeColourImage(path.join(data, 'white', `w${i}.png`), [250, 250, 250], i + 1);
      await writeColourImage(path.join(data, 'yellow', `y${i}.png`), [245, 245, 190], i + 11);
    }
    await writeColourImage(path.join(data, 'yellow', 'red.png'), [200, 40, 40], 99);
    const cache = path.join(dir, 'cache');
    const base = ['--model', model, '--cache', cache, '--device', 'cpu'];
    const r = await runCli(['extract', '--data', data, ...base, '--json']);
    assert.equal(r.code, 3, r.stderr);
    const info = JSON.parse((await runCli(['info', '--cache', cache, '--json'])).stdout);
    assert.equal(info.splits[0].rows, 8, 'only the finite images are rows');
    assert.deepEqual(
      info.splits[0].failures.map((f: { path: string; stage: string }) => [path.basename(f.path), f.stage]),
      [['red.png', 'infer']],
    );
    assert.match(info.splits[0].failures[0].message, /non-finite features/);

    const head = path.join(dir, 'head');
    const trained = await runCli(['train-head', '--cache', cache, '--head', head, '--no-sweep', '--epochs', '3']);
    assert.equal(trained.code, 0, trained.stderr);
    const p = await runCli([
      'predict',
      '--head',
      head,
      '--model',
      model,
      '--device',
      'cpu',
      '--json',
      path.join(data, 'white', 'w0.png'),
      path.join(data, 'yellow', 'red.png'),
    ]);
    assert.equal(p.code, 3, p.stderr);
    const predictions = p.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { path: string; top: unknown[]; error?: string });
    assert.equal(predictions[0]!.error, undefined);
    assert.match(predictions[1]!.error ?? '', /non-finite/);
    assert.deepEqual(predictions[1]!.top, []);
  });

  it('train-head refuses NaN / Infinity planted in a part, naming the rows', async () => {
    const dir = await tempDir();
    const cache = path.join(dir, 'cache');
    await writeSyntheticCache(cache);
    await ensureManifest(cache, JSON.parse(await fs.readFile(path.join(cache, 'cache.json'), 'utf8')));
    await writePart(path.join(cache, 'train', 'part-0003-0of1-000000.arrow'), {
      meta: { split: 'train', shard: '0of1', runId: 'x', dim: 4, failures: [], removed: [], provenance: {} },
      rows: [
        { path: 'planted/nan.jpg', label: 0, labelName: 'ants', size: 1, mtimeMs: 1 },
        { path: 'planted/inf.jpg', label: 1, labelName: 'bees', size: 1, mtimeMs: 1 },
      ],
      features: Float32Array.from([NaN, 0, 0, 0, 0, Infinity, 0, 0]),
    });
    const r = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'head'), '--no-sweep']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /split train has non-finite features .* in 2 rows: planted\/inf\.jpg, planted\/nan\.jpg/);
    await assert.rejects(fs.stat(path.join(dir, 'head', 'head.json')), 'no head is saved');
  });

  it('train-head --lr 1e99 diverges: refused, naming the setting', async () => {
    const dir = await tempDir();
    const cache = path.join(dir, 'cache');
    await writeSyntheticCache(cache);
    const r = await runCli([
      'train-head',
      '--cache',
      cache,
      '--head',
      path.join(dir, 'head'),
      '--no-sweep',
      '--lr',
      '1e99',
      '--epochs',
      '3',
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /training diverged: .* lr 1e\+99.*; lower --lr \(got 1e\+99\)/);
    await assert.rejects(fs.stat(path.join(dir, 'head', 'head.json')), 'no head is saved');
  });
});
