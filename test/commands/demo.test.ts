import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { runCli, tempDir, writeColourFolder, writeTinyModel } from '../support/helpers.js';

describe('featcache demo (the main job)', () => {
  it('runs extract → train-head → predict on local data and model, says which model it used, writes the report', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 6);
    const r = await runCli(
      ['demo', '--data', path.join(dir, 'data'), '--model', model, '--device', 'cpu', '--epochs', '30'],
      { cwd: dir },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^demo: model .*tiny\.onnx \(given with --model\); data /m);
    assert.match(r.stdout, /^extract train: 18 extracted/m);
    assert.match(r.stdout, /^extract val: 9 extracted/m);
    assert.match(r.stdout, /^train-head: 18 train \/ 9 val rows/m);
    assert.match(r.stdout, /^demo: predicted 9 val images, \d+ wrong; open demo-predictions\.html$/m);
    const page = await fs.readFile(path.join(dir, 'demo-predictions.html'), 'utf8');
    assert.equal((page.match(/<img /g) ?? []).length, 9);
    assert.ok((await fs.readdir(path.join(dir, 'models', 'demo-head'))).includes('model.json'));
    assert.ok((await fs.readdir(path.join(dir, 'features'))).includes('demo-tiny'));
  });
});

describe('command line', () => {
  it('lists the commands in --help and refuses unknown commands and flags with exit 2', async () => {
    const help = await runCli(['--help']);
    assert.equal(help.code, 0);
    for (const command of ['demo', 'extract', 'inspect', 'train-head', 'predict', 'export', 'info', 'fetch-model'])
      assert.match(help.stdout, new RegExp(`featcache ${command}`));
    const unknown = await runCli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^featcache: Unknown argument: frobnicate/);
    const flag = await runCli(['extract', '--data', '.', '--batchsize', '3']);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /Unknown argument: batchsize/);
    const bad = await runCli(['extract', '--data', '.', '--batch-size', '0']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim(), 'featcache: --batch-size: expected a positive integer, got 0');
    const repeated = await runCli(['extract', '--data', '.', '--batch-size', '3', '--batch-size', '0']);
    assert.equal(
      repeated.stderr.trim(),
      'featcache: --batch-size: expected a positive integer, got 0',
      'the last of a repeated flag wins',
    );
  });

  it('prints a stack trace only with --debug', async () => {
    const plain = await runCli(['inspect', '/no/such.onnx']);
    const debug = await runCli(['inspect', '/no/such.onnx', '--debug']);
    assert.equal(plain.code, 2);
    assert.equal(plain.stderr.trim().split('\n').length, 1);
    assert.match(debug.stderr, /\n\s+at /);
  });
});
