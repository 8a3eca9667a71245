/** `extract --int8` end to end on the command line: calibration, reuse across splits, cache identity, heads. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { mobilenetModel, needsShared, runCli, tempDir, writeColourFolder } from '../support/helpers.js';
import { writeTinyCnn } from '../support/tiny-cnn.js';
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
    assert.notEqual(other.code, 0);
    assert.match(
      other.stderr,
      /int8 calibration [0-9a-f]{12}… vs [0-9a-f]{12}… \(a different calibration quantises differently\)/,
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
