/**
 * A dataset laid out as training/ and validation/ (Kaggle's layout, e.g. ../shared/data/monkeys) works with the
 * defaults: extract without --split reads training/ and caches it as `training`, train-head's default train and val
 * find `training` and `validation`, and each says so in one line.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { runCli, tempDir, writeColourFolder, writeTinyModel } from '../support/helpers.js';

describe('training/ and validation/ split folders', () => {
  it('extract, train-head and map find them under the default split names', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    const data = path.join(dir, 'data');
    await writeColourFolder(data, 8);
    await fs.rename(path.join(data, 'train'), path.join(data, 'training'));
    await fs.rename(path.join(data, 'val'), path.join(data, 'validation'));
    const cache = path.join(dir, 'features');
    const extract = (...args: string[]) =>
      runCli(['extract', '--data', data, '--model', model, '--cache', cache, '--device', 'cpu', ...args]);

    const train = await extract();
    assert.equal(train.code, 0, train.stderr);
    assert.match(train.stderr, /--split train: reading the split folder training/);
    const val = await extract('--split', 'val');
    assert.equal(val.code, 0, val.stderr);
    const info = JSON.parse((await runCli(['info', '--cache', cache, '--json'])).stdout);
    const splits = JSON.stringify(info);
    assert.match(splits, /"training"/);
    assert.match(splits, /"validation"/);
    assert.doesNotMatch(splits, /"train"|"val"/, 'the cache keeps the folders’ own names');
    // The same default again is incremental: nothing new to extract.
    const again = await extract('--json');
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).extracted, 0);

    const head = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'head'), '--json']);
    assert.equal(head.code, 0, head.stderr);
    const result = JSON.parse(head.stdout);
    assert.equal(result.trainRows, 24);
    assert.equal(result.valRows, 12);
    assert.equal(result.validation, 'split', 'validated on the validation split, not on a hold-out of train');
    const said = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'head-2')]);
    assert.equal(said.code, 0, said.stderr);
    assert.match(said.stderr, /split train is cached as training/);
    assert.match(said.stderr, /split val is cached as validation/);

    const map = await runCli(['map', '--cache', cache, '--out', path.join(dir, 'map.html'), '--json']);
    assert.equal(map.code, 0, map.stderr);
    assert.deepEqual(JSON.parse(map.stdout).splits, ['training']);
  });
});
