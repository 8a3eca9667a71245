import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { loadTf } from '../../src/head/runtime.js';
import { loadHead } from '../../src/head/saved.js';
import { hymenoptera, mobilenetModel, needsShared, runCli, tempDir, writeColourFolder, writeTinyModel } from '../support/helpers.js';

describe('train-head and predict (tiny model, colour classes)', () => {
  let dir: string;
  let model: string;
  let cache: string;
  let head: string;
  before(async () => {
    dir = await tempDir();
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 12);
    cache = path.join(dir, 'features');
    head = path.join(dir, 'head');
    for (const split of ['train', 'val']) {
      const r = await runCli(['extract', '--data', path.join(dir, 'data'), '--split', split, '--model', model, '--cache', cache, '--device', 'cpu']);
      assert.equal(r.code, 0, r.stderr);
    }
  });

  it('trains on the cached train split, validates on val, and saves a loadable TF.js head with provenance', async () => {
    const r = await runCli(['train-head', '--cache', cache, '--head', head, '--epochs', '30', '--lr', '0.05', '--normalize', 'standard', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.validation, 'split');
    assert.deepEqual(result.classes, ['blue', 'green', 'red']);
    assert.equal(result.history.length, 30);
    assert.ok(result.metrics.top1 >= 0.9, `val top-1 ${result.metrics.top1}`);
    assert.equal(result.metrics.top5, null, 'top-5 only with >= 5 classes');
    assert.equal(result.metrics.confusion.length, 3);
    const names = await fs.readdir(head);
    for (const f of ['model.json', 'weights.bin', 'head.json', 'history.json', 'metrics.json', 'curves.html']) assert.ok(names.includes(f), f);
    const modelJson = JSON.parse(await fs.readFile(path.join(head, 'model.json'), 'utf8'));
    assert.equal(modelJson.format, 'layers-model');
    assert.equal(modelJson.weightsManifest[0].paths[0], 'weights.bin');
    const info = JSON.parse(await fs.readFile(path.join(head, 'head.json'), 'utf8'));
    assert.equal(info.normalization.kind, 'standard');
    assert.equal(info.normalization.mean.length, 3);
    assert.match(info.provenance.modelSha256, /^[0-9a-f]{64}$/);
    assert.equal(info.provenance.tappedTensor, 'pooled');
    assert.equal(info.provenance.preset.name, 'torchvision');
    assert.ok(info.provenance.backend);
    const curves = await fs.readFile(path.join(head, 'curves.html'), 'utf8');
    assert.match(curves, /<svg[^>]*aria-label="loss"/);
    assert.match(curves, /<polyline/);
    const tf = (await loadTf()).tf;
    const loaded = await loadHead(tf, head);
    const p = loaded.predict(new Float32Array(3), 1);
    assert.equal(p.length, 3);
    assert.ok(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'softmax output');
  });

  it('validates on a stratified --val-fraction of train when asked', async () => {
    const r = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'head-frac'), '--val-fraction', '0.25', '--epochs', '3', '--json']);
    const result = JSON.parse(r.stdout);
    assert.equal(result.validation, 'fraction');
    assert.equal(result.valRows, 9);
    assert.equal(result.trainRows, 27);
  });

  it('predicts files, folders and globs: table, JSON lines, CSV and an HTML report', async () => {
    const val = path.join(dir, 'data', 'val');
    const json = await runCli(['predict', path.join(val, 'red'), path.join(val, 'blue', 'blue0.png'), `${val}/green/green[01].png`, '--head', head, '--top', '2', '--json', '--device', 'cpu']);
    assert.equal(json.code, 0, json.stderr);
    const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 6 + 1 + 2);
    for (const line of lines) {
      assert.equal(line.top.length, 2);
      assert.equal(line.top[0].label, path.basename(path.dirname(line.path)), line.path);
      assert.ok(line.top[0].probability >= line.top[1].probability);
    }
    const csv = await runCli(['predict', path.join(val, 'red', 'red0.png'), '--head', head, '--csv', '--device', 'cpu']);
    assert.match(csv.stdout, /^path,label_1,p_1,label_2,p_2,label_3,p_3,error\n.*red0\.png,red,[01]\.\d+/);
    const report = path.join(dir, 'report.html');
    const html = await runCli(['predict', val, '--head', head, '--report', report, '--device', 'cpu']);
    assert.equal(html.code, 0);
    const page = await fs.readFile(report, 'utf8');
    assert.equal((page.match(/<img /g) ?? []).length, 18);
    assert.match(page, /predicted: (red|green|blue) \(\d\.\d\d\)/);
    assert.match(page, /src="data:image\/jpeg;base64,/);
    assert.match(page, /\d+ of 18 images in a class folder predicted correctly/);
    const limited = path.join(dir, 'limited.html');
    await runCli(['predict', val, '--head', head, '--report', limited, '--report-limit', '5', '--device', 'cpu']);
    const small = await fs.readFile(limited, 'utf8');
    assert.equal((small.match(/<img /g) ?? []).length, 5);
    assert.match(small, /Showing the first 5 of 18 images/);
  });

  it('reports unreadable images per file and carries on (exit 3)', async () => {
    const bad = path.join(dir, 'broken.png');
    await fs.writeFile(bad, 'not a png');
    const r = await runCli(['predict', bad, path.join(dir, 'data', 'val', 'red', 'red0.png'), '--head', head, '--json', '--device', 'cpu']);
    assert.equal(r.code, 3);
    const [first, second] = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.match(first.error, /unsupported image format/);
    assert.equal(second.top[0].label, 'red');
    assert.match(r.stderr, /1 of 2 images could not be read/);
  });

  it('refuses a head trained on another backbone, and a missing head', async () => {
    const other = await writeTinyModel(path.join(dir, 'other.onnx'), { pool: 'ReduceMean13' });
    const r = await runCli(['predict', path.join(dir, 'data', 'val', 'red'), '--head', head, '--model', other, '--device', 'cpu']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.trim(), /^featcache: --model .*other\.onnx: sha256 [0-9a-f]{12}… is not the backbone the head .* was trained on/);
    const missing = await runCli(['predict', path.join(dir, 'data', 'val'), '--head', path.join(dir, 'nohead')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--head .*nohead: no head.json here; train one with 'featcache train-head/);
  });

  it('records the TensorFlow.js backend used, and refuses one that is not installed', async () => {
    const r = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'head-cpu'), '--epochs', '2', '--backend', 'cpu', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).backend, 'cpu');
    const info = JSON.parse(await fs.readFile(path.join(dir, 'head-cpu', 'head.json'), 'utf8'));
    assert.equal(info.provenance.backend, 'cpu');
    const hasNode = await import('@tensorflow/tfjs-node' as string).then(() => true, () => false);
    if (!hasNode) {
      const t = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'head-tf'), '--epochs', '2', '--backend', 'tensorflow']);
      assert.equal(t.code, 1);
      assert.match(t.stderr.trim(), /^featcache: --backend tensorflow: @tensorflow\/tfjs-node is not installed/);
    }
  });

  it('refuses bad flags in one line', async () => {
    const r = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'h2'), '--optimizer', 'rmsprop']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--optimizer|Invalid values/);
    const e = await runCli(['train-head', '--cache', path.join(dir, 'nocache'), '--head', path.join(dir, 'h3')]);
    assert.equal(e.code, 2);
    assert.match(e.stderr, /--cache .*nocache: no feature cache here/);
  });
});

describe('accuracy on real data: MobileNetV2-int8 on hymenoptera', { skip: needsShared(mobilenetModel, hymenoptera) }, () => {
  it('reaches validation accuracy >= 0.92', async () => {
    const dir = await tempDir();
    const cache = path.join(dir, 'features');
    for (const split of ['train', 'val']) {
      const r = await runCli(['extract', '--data', hymenoptera, '--split', split, '--model', mobilenetModel, '--cache', cache, '--device', 'cpu']);
      assert.equal(r.code, 0, r.stderr);
    }
    const r = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'head'), '--normalize', 'l2', '--epochs', '10', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.valRows, 153);
    assert.ok(result.metrics.top1 >= 0.92, `val top-1 ${result.metrics.top1}`);
  });
});
