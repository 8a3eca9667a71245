/** `extract --int8` end to end on the command line: calibration, reuse across splits, cache identity, heads. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import {
  mobilenetModel,
  needsShared,
  runCli,
  tempDir,
  writeColourFolder,
  writeColourImage,
} from '../support/helpers.js';
import { writeTinyCnn } from '../support/tiny-cnn.js';
import { FeatureCache } from '../../src/store/reader.js';
import { sha256File } from '../../src/util/fsx.js';

describe('extract --int8 (tiny CNN, colour classes)', () => {
  let dir: string;
  let data: string;
  let model: string;
  let cache: string;
  before(async () => {
    dir = await tempDir();
    data = path.join(dir, 'data');
    await writeColourFolder(data, 6);
    model = await writeTinyCnn(path.join(dir, 'models/tiny.onnx'), { size: 224 });
    cache = path.join(dir, 'features');
  });

  it('quantises on first use from the train split, then reuses that model for val', async () => {
    const train = await runCli([
      'extract',
      '--data',
      data,
      '--model',
      model,
      '--cache',
      cache,
      '--device',
      'cpu',
      '--int8',
      '--calibrate',
      '8',
      '--json',
    ]);
    assert.equal(train.code, 0, train.stderr);
    const t = JSON.parse(train.stdout);
    assert.equal(t.precision, 'int8');
    assert.equal(t.int8.reused, false);
    assert.equal(t.int8.qlinearConv, 6);
    assert.equal(t.int8.qlinearAdd, 2);
    // Saved in featcache's cache folder under the model's sha256 (issue 27 item 6), never beside the model.
    assert.equal(
      path.dirname(t.int8.file),
      path.join(process.env.FEATCACHE_CACHE_DIR!, 'models', await sha256File(model)),
    );
    assert.deepEqual(await fs.readdir(path.dirname(model)), ['tiny.onnx']);
    assert.match(
      train.stderr,
      /int8: calibrating \d+ activations \(mse ranges\) and quantising 6 Conv, 2 Add of tiny\.onnx on 8 images/,
    );
    const provenance = JSON.parse(await fs.readFile(`${t.int8.file}.json`, 'utf8'));
    assert.equal(provenance.calibration.images.length, 8);
    assert.ok(provenance.calibration.images.every((i: { id: string }) => i.id.startsWith('train/')));
    const manifest = JSON.parse(await fs.readFile(path.join(cache, 'cache.json'), 'utf8'));
    assert.equal(manifest.precision, 'int8');
    assert.equal(manifest.calibrationHash, t.int8.calibrationHash);

    const val = await runCli([
      'extract',
      '--data',
      data,
      '--split',
      'val',
      '--model',
      model,
      '--cache',
      cache,
      '--device',
      'cpu',
      '--int8',
      '--calibrate',
      '8',
      '--json',
    ]);
    assert.equal(val.code, 0, val.stderr);
    const v = JSON.parse(val.stdout);
    assert.equal(v.int8.reused, true);
    assert.equal(v.int8.calibrationHash, t.int8.calibrationHash);
    assert.doesNotMatch(val.stderr, /calibrating/);
  });

  it('refuses to mix FP32 rows or another calibration into an int8 cache, saying why', async () => {
    const fp32 = await runCli(['extract', '--data', data, '--model', model, '--cache', cache, '--device', 'cpu']);
    assert.notEqual(fp32.code, 0);
    assert.match(
      fp32.stderr,
      /--cache .*: holds features of a different backbone or preprocessing \(precision int8 vs fp32 \(int8 features are not interchangeable with float ones\)\)/,
    );
    const other = await runCli([
      'extract',
      '--data',
      data,
      '--model',
      model,
      '--cache',
      cache,
      '--device',
      'cpu',
      '--int8',
      '--calibrate',
      '5',
    ]);
    assert.equal(other.code, 2);
    // The cache keeps its calibration (issue 27 item 16): another one is asked for by the flag, and refused by it.
    assert.match(
      other.stderr,
      /--calibrate 5: the cache .* keeps the int8 calibration it was made with \(--calibrate 8\); .* extract into a new --cache to recalibrate/,
    );
  });

  it('a head trained on int8 features predicts with the same int8 model, and says so when it is gone', async () => {
    const head = path.join(dir, 'head');
    const trained = await runCli([
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
      '--json',
    ]);
    assert.equal(trained.code, 0, trained.stderr);
    const info = JSON.parse(await fs.readFile(path.join(head, 'head.json'), 'utf8'));
    const manifest = JSON.parse(await fs.readFile(path.join(cache, 'cache.json'), 'utf8'));
    assert.equal(info.provenance.precision, 'int8');
    assert.equal(info.provenance.calibrationHash, manifest.calibrationHash);
    const predicted = await runCli(['predict', path.join(data, 'val'), '--head', head, '--device', 'cpu', '--json']);
    assert.equal(predicted.code, 0, predicted.stderr);
    await fs.rm(manifest.int8Model);
    const gone = await runCli(['predict', path.join(data, 'val'), '--head', head, '--device', 'cpu']);
    assert.notEqual(gone.code, 0);
    assert.match(
      gone.stderr,
      /--int8: the int8 model calibrated as [0-9a-f]{12}… is missing or damaged \(expected .*\/models\/[0-9a-f]{64}\/int8-[0-9a-f]{16}\.onnx\); re-run 'featcache extract --int8'/,
    );
  });

  it('refuses an already-quantised model', { skip: needsShared(mobilenetModel) }, async () => {
    const r = await runCli([
      'extract',
      '--data',
      data,
      '--model',
      mobilenetModel,
      '--cache',
      path.join(dir, 'mnv2'),
      '--device',
      'cpu',
      '--int8',
      '--tap',
      'GlobalAveragePool_97_quant',
    ]);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /--int8: --model .*mobilenetv2-12-int8\.onnx is already quantised \(has .*QLinearConv.*\); run it without --int8/,
    );
  });
});

/** Features by path, to compare rows across runs. */
async function featuresByPath(cache: string, split: string): Promise<Map<string, number[]>> {
  const set = await (await FeatureCache.open(cache)).read(split);
  return new Map(set.paths.map((p, i) => [p, Array.from(set.features.subarray(i * set.dim, (i + 1) * set.dim))]));
}

describe('extract --int8 is incremental: the cache keeps its calibration (issue 27, item 16)', () => {
  let dir: string;
  let data: string;
  let model: string;
  let cache: string;
  let args: string[];
  before(async () => {
    dir = await tempDir();
    data = path.join(dir, 'data');
    await writeColourFolder(data, 4);
    model = await writeTinyCnn(path.join(dir, 'models/tiny.onnx'), { size: 224 });
    cache = path.join(dir, 'features');
    args = ['extract', '--data', data, '--model', model, '--cache', cache, '--device', 'cpu', '--int8'];
    args.push('--calibrate', '8', '--json');
  });

  /** New train images: they change the seeded calibration sample that a fresh calibration would draw. */
  const addImages = async (tag: string, count: number) => {
    for (let i = 0; i < count; i++)
      await writeColourImage(path.join(data, 'train', 'red', `${tag}${i}.png`), [210, 40, 50], 1000 + i);
  };

  it('after images are added, the same command extracts only the new ones with the same calibration', async () => {
    const first = await runCli(args);
    assert.equal(first.code, 0, first.stderr);
    const f = JSON.parse(first.stdout);
    assert.equal(f.precision, 'int8');
    assert.equal(f.extracted, 12);
    const before = await featuresByPath(cache, 'train');
    const manifest = JSON.parse(await fs.readFile(path.join(cache, 'cache.json'), 'utf8'));

    await addImages('added', 9);
    const second = await runCli(args);
    assert.equal(second.code, 0, `the same command into the same cache must succeed: ${second.stderr}`);
    const s = JSON.parse(second.stdout);
    assert.equal(s.extracted, 9);
    assert.equal(s.unchanged, 12);
    assert.equal(s.int8.calibrationHash, f.int8.calibrationHash);
    assert.equal(s.int8.reused, true);
    assert.doesNotMatch(second.stderr, /calibrating/);
    const after = await featuresByPath(cache, 'train');
    assert.equal(after.size, 21);
    for (const [p, v] of before) assert.deepEqual(after.get(p), v, `features of ${p} changed`);
    const again = JSON.parse(await fs.readFile(path.join(cache, 'cache.json'), 'utf8'));
    assert.equal(again.calibrationHash, manifest.calibrationHash);
    // The cache records its calibration: the images and their hashes, the ranges and the hash of the result.
    const kept = again.int8Calibration;
    assert.deepEqual(kept, manifest.int8Calibration);
    assert.equal(kept.calibrationHash, f.int8.calibrationHash);
    assert.equal(kept.calibration.images.length, 8);
    assert.ok(kept.calibration.images.every((i: { sha256: string }) => /^[0-9a-f]{64}$/.test(i.sha256)));
    assert.ok(Object.keys(kept.ranges).length > 0);
    assert.equal(kept.sha256, await sha256File(f.int8.file));
  });

  it('rebuilds a lost int8 model from the ranges the cache recorded, bit for bit, without calibrating', async () => {
    const manifest = JSON.parse(await fs.readFile(path.join(cache, 'cache.json'), 'utf8'));
    await fs.rm(manifest.int8Model);
    await fs.rm(`${manifest.int8Model}.json`);
    await addImages('more', 3);
    const r = await runCli(args);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.extracted, 3);
    assert.equal(j.int8.calibrationHash, manifest.calibrationHash);
    assert.doesNotMatch(r.stderr, /calibrating/);
    assert.equal(await sha256File(j.int8.file), manifest.int8Calibration.sha256);
  });

  it('a cache made before featcache kept its calibration finds its model by hash and learns the record', async () => {
    const file = path.join(cache, 'cache.json');
    const manifest = JSON.parse(await fs.readFile(file, 'utf8'));
    const { int8Calibration, ...legacy } = manifest;
    await fs.writeFile(file, `${JSON.stringify(legacy, null, 2)}\n`);
    await addImages('legacy', 2);
    const r = await runCli(args);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.extracted, 2);
    assert.equal(j.int8.calibrationHash, manifest.calibrationHash);
    assert.doesNotMatch(r.stderr, /calibrating/);
    assert.deepEqual(JSON.parse(await fs.readFile(file, 'utf8')).int8Calibration, int8Calibration);
  });

  it('refuses other calibration settings on a calibrated cache, naming the flag and how to recalibrate', async () => {
    const r = await runCli([...args.slice(0, -3), '--calibrate', '5']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /--calibrate 5: the cache .* keeps the int8 calibration it was made with \(--calibrate 8\); drop the flag or pass that value, or extract into a new --cache to recalibrate/,
    );
  });
});
