import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { loadTf } from '../../src/head/runtime.js';
import { loadHead } from '../../src/head/saved.js';
import { classificationMetrics } from '../../src/head/metrics.js';
import { plainProbabilities } from '../support/head-reference.js';
import { applyNormalization } from '../../src/head/normalize.js';
import { FeatureCache } from '../../src/store/reader.js';
import {
  hymenoptera,
  extractMobilenet,
  mobilenetModel,
  needsShared,
  runCli,
  tempDir,
  writeColourFolder,
  writeColourImage,
  writeTinyModel,
} from '../support/helpers.js';
import { writeFewShotCache } from '../support/synthetic-fewshot.js';

/** An optional dependency: a string variable keeps tsc from resolving it where it is not installed. */
const TFJS_NODE: string = '@tensorflow/tfjs-node';

/** Top-1, 15-bin ECE (count-weighted, bins (k/15, (k+1)/15]) and NLL, written out. */
function plainCalibration(p: Float64Array, labels: Int32Array, classes: number) {
  const bins = Array.from({ length: 15 }, () => ({ n: 0, conf: 0, right: 0 }));
  let [right, nll] = [0, 0];
  labels.forEach((y, r) => {
    const row = Array.from(p.subarray(r * classes, (r + 1) * classes));
    const conf = Math.max(...row);
    const hit = row.indexOf(conf) === y;
    let b = 0;
    for (let k = 1; k < 15; k++) if (k / 15 < conf) b = k;
    bins[b]!.n++;
    bins[b]!.conf += conf;
    if (hit) {
      bins[b]!.right++;
      right++;
    }
    nll -= Math.log(Math.max(row[y]!, 1e-12));
  });
  const n = labels.length;
  const ece = bins.reduce((e, b) => (b.n > 0 ? e + (b.n / n) * Math.abs(b.right / b.n - b.conf / b.n) : e), 0);
  return { top1: right / n, ece, nll: nll / n };
}

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
  });

  it('trains on the cached train split, validates on val, and saves a loadable TF.js head with provenance', async () => {
    const r = await runCli([
      'train-head',
      '--cache',
      cache,
      '--head',
      head,
      '--epochs',
      '30',
      '--lr',
      '0.05',
      '--normalize',
      'standard',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.validation, 'split');
    assert.deepEqual(result.classes, ['blue', 'green', 'red']);
    assert.equal(result.history.length, 30);
    assert.ok(result.metrics.top1 >= 0.9, `val top-1 ${result.metrics.top1}`);
    assert.equal(result.metrics.top5, null, 'top-5 only with >= 5 classes');
    assert.equal(result.metrics.confusion.length, 3);
    const names = await fs.readdir(head);
    for (const f of ['model.json', 'weights.bin', 'head.json', 'history.json', 'metrics.json', 'curves.html'])
      assert.ok(names.includes(f), f);
    const modelJson = JSON.parse(await fs.readFile(path.join(head, 'model.json'), 'utf8'));
    assert.equal(modelJson.format, 'layers-model');
    assert.equal(modelJson.weightsManifest[0].paths[0], 'weights.bin');
    const info = JSON.parse(await fs.readFile(path.join(head, 'head.json'), 'utf8'));
    assert.equal(info.normalization.kind, 'standard');
    // The statistics are the train rows' (two-pass, independent of the accumulator), not val's.
    const store = await FeatureCache.open(cache);
    const trainSet = await store.read('train');
    for (let d = 0; d < 3; d++) {
      const column = Array.from({ length: trainSet.count }, (_, r) => trainSet.features[r * 3 + d]!);
      const mean = column.reduce((a, b) => a + b, 0) / column.length;
      const std = Math.sqrt(column.reduce((a, b) => a + (b - mean) ** 2, 0) / column.length);
      assert.ok(Math.abs(info.normalization.mean[d] - mean) < 1e-9 * Math.max(1, Math.abs(mean)), `mean[${d}]`);
      assert.ok(Math.abs(info.normalization.std[d] - std) < 1e-6 * std, `std[${d}]`);
    }
    assert.match(info.provenance.modelSha256, /^[0-9a-f]{64}$/);
    assert.equal(info.provenance.tappedTensor, 'pooled');
    assert.equal(info.provenance.preset.name, 'torchvision');
    assert.ok(info.provenance.backend);
    const curves = await fs.readFile(path.join(head, 'curves.html'), 'utf8');
    assert.match(curves, /<svg[^>]*aria-label="loss"/);
    assert.match(curves, /<polyline/);
    // A loaded head reproduces training's evaluation: same top-1 and the same calibrated ECE on val.
    const tf = (await loadTf()).tf;
    const loaded = await loadHead(tf, head);
    assert.equal(loaded.temperature, result.temperature);
    const valSet = await store.read('val');
    const features = applyNormalization(info.normalization, valSet.features.slice(), valSet.count, 3);
    const p = loaded.predict(features, valSet.count);
    const metrics = classificationMetrics(p, valSet.labels, info.classes);
    assert.equal(metrics.top1, result.metrics.top1);
    assert.deepEqual(metrics.confusion, result.metrics.confusion);
    loaded.dispose();
    // The reported top-1, ECE and NLL, recomputed here from the head's files and val's raw features.
    const plain = await plainProbabilities(head, valSet.features, valSet.count, result.temperature);
    const expected = plainCalibration(plain.probabilities, valSet.labels, 3);
    assert.equal(expected.top1, result.metrics.top1);
    assert.ok(
      Math.abs(expected.ece - result.calibration.after.ece) < 1e-5,
      `ECE ${result.calibration.after.ece} vs ${expected.ece}`,
    );
    assert.ok(
      Math.abs(expected.nll - result.calibration.after.nll) < 1e-5,
      `NLL ${result.calibration.after.nll} vs ${expected.nll}`,
    );
  });

  it('sweeps by default: holds given flags fixed, selects on a hold-out of train, saves the temperature, reports calibration', async () => {
    const dir2 = path.join(dir, 'head-sweep');
    const r = await runCli(['train-head', '--cache', cache, '--head', dir2, '--lr', '0.05', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.ok(result.sweep, 'swept');
    assert.deepEqual(result.sweep.fixed, ['--lr']);
    assert.ok(result.sweep.candidates.every((c: { lr: number }) => c.lr === 0.05));
    assert.equal(new Set(result.sweep.candidates.map((c: { normalize: string }) => c.normalize)).size, 3);
    assert.equal(result.sweep.method, 'kfold', '36 train rows: a 20% hold-out is too small');
    assert.equal(result.setting.epochs, result.sweep.chosen.epoch);
    assert.equal(
      result.history.length,
      result.sweep.chosen.epoch,
      'refit for the chosen epochs, no best-epoch pick on val',
    );
    const info = JSON.parse(await fs.readFile(path.join(dir2, 'head.json'), 'utf8'));
    assert.equal(info.temperature, result.sweep.temperature);
    const metrics = JSON.parse(await fs.readFile(path.join(dir2, 'metrics.json'), 'utf8'));
    // Calibration before (T = 1) and after (the saved T) on val, recomputed from the head's files.
    assert.notEqual(info.temperature, 1, 'a fitted temperature, so before and after differ');
    const valSet = await (await FeatureCache.open(cache)).read('val');
    for (const [k, t] of [
      ['before', 1],
      ['after', info.temperature as number],
    ] as const) {
      const plain = await plainProbabilities(dir2, valSet.features, valSet.count, t);
      const expected = plainCalibration(plain.probabilities, valSet.labels, 3);
      for (const m of ['ece', 'nll'] as const)
        assert.ok(
          Math.abs(metrics.calibration[k][m] - expected[m]) < 1e-5,
          `${k} ${m}: ${metrics.calibration[k][m]} vs ${expected[m]}`,
        );
    }
    assert.equal(metrics.sweep.candidates.length, result.sweep.candidates.length);
    const curves = await fs.readFile(path.join(dir2, 'curves.html'), 'utf8');
    assert.match(curves, /aria-label="reliability"/);
    assert.match(curves, /Sweep: held-out accuracy/);
    const human = await runCli(['train-head', '--cache', cache, '--head', dir2, '--lr', '0.05', '--epochs', '5']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(
      human.stderr,
      /^train-head: sweep chose normalize (none|l2|standard), lr 0\.05, weight decay [\d.e-]+, 5 epochs .*fixed: --lr, --epochs/m,
    );
    const manual = JSON.parse(
      (await runCli(['train-head', '--cache', cache, '--head', dir2, '--no-sweep', '--epochs', '3', '--json'])).stdout,
    );
    assert.equal(manual.sweep, null);
    assert.equal(manual.temperature, 1);
    assert.equal(JSON.parse(await fs.readFile(path.join(dir2, 'head.json'), 'utf8')).temperature, undefined);
  });

  it('by default fits the L-BFGS probe: C × normalisation chosen on folds of train, one dense layer, calibrated, reproducible', async () => {
    const probeHead = path.join(dir, 'head-probe');
    const r = await runCli(['train-head', '--cache', cache, '--head', probeHead, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.setting.solver, 'lbfgs');
    assert.equal(result.setting.lr, null);
    assert.equal(result.setting.epochs, null);
    assert.equal(result.sweep.solver, 'lbfgs');
    assert.equal(result.sweep.method, 'kfold', '36 train rows: a 20% hold-out is too small');
    // 3-d features and 36 rows: standardisation has enough rows, so the whole default grid is swept.
    assert.equal(result.sweep.candidates.length, 6 * 3);
    assert.deepEqual(
      [...new Set(result.sweep.candidates.map((c: { c: number }) => c.c))],
      [0.01, 0.1, 1, 10, 100, 1000],
    );
    assert.ok(
      result.sweep.candidates.every(
        (c: { calibratedLoss: number; holdoutLoss: number; lr: null; epoch: null }) =>
          Number.isFinite(c.calibratedLoss) &&
          c.calibratedLoss <= c.holdoutLoss + 1e-12 &&
          c.lr === null &&
          c.epoch === null,
      ),
    );
    assert.equal(result.sweep.chosen.tied, true);
    assert.equal(result.setting.c, result.sweep.chosen.c);
    assert.equal(result.setting.weightDecay, 1 / (result.setting.c * result.trainRows));
    assert.ok(result.probe.iterations > 0 && result.probe.stopped !== 'iterations', JSON.stringify(result.probe));
    assert.deepEqual(result.history, []);
    assert.ok(result.metrics.top1 >= 0.9, `val top-1 ${result.metrics.top1}`);
    const info = JSON.parse(await fs.readFile(path.join(probeHead, 'head.json'), 'utf8'));
    assert.equal(info.options.solver, 'lbfgs');
    assert.equal(info.options.c, result.setting.c);
    assert.equal(info.options.lr, undefined, 'no learning rate recorded for a probe');
    assert.equal(info.temperature, result.temperature);
    assert.equal(info.normalization.kind, result.setting.normalize);
    const metrics = JSON.parse(await fs.readFile(path.join(probeHead, 'metrics.json'), 'utf8'));
    assert.equal(metrics.sweep.candidates.length, 18);
    assert.match(
      await fs.readFile(path.join(probeHead, 'curves.html'), 'utf8'),
      /per C; outlined: chosen; dashed: within one standard error/,
    );
    // The loaded head reproduces training's evaluation.
    const tf = (await loadTf()).tf;
    const loaded = await loadHead(tf, probeHead);
    const valSet = await (await FeatureCache.open(cache)).read('val');
    const p = loaded.predict(
      applyNormalization(info.normalization, valSet.features.slice(), valSet.count, 3),
      valSet.count,
    );
    assert.equal(classificationMetrics(p, valSet.labels, info.classes).top1, result.metrics.top1);
    loaded.dispose();
    // Same data, same seed: the same weights, byte for byte.
    const again = path.join(dir, 'head-probe-again');
    assert.equal((await runCli(['train-head', '--cache', cache, '--head', again])).code, 0);
    for (const f of ['model.json', 'weights.bin'])
      assert.ok((await fs.readFile(path.join(probeHead, f))).equals(await fs.readFile(path.join(again, f))), f);
  });

  it('says which solver and why; mini-batch options, a hidden layer or --no-sweep choose mini-batch; lbfgs with a hidden layer is refused', async () => {
    const h = path.join(dir, 'head-solver');
    const human = await runCli(['train-head', '--cache', cache, '--head', h]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stderr, /^train-head: solver lbfgs \(the default for a linear head\)$/m);
    assert.match(
      human.stderr,
      /^train-head: sweep chose normalize (none|l2|standard), C [\d.]+ \(\d+ of 18 candidates tied within one standard error\)/m,
    );
    assert.match(human.stdout, /^train-head: .*logistic regression \(L-BFGS\).*L-BFGS \d+ iterations/m);
    const pinned = JSON.parse(
      (
        await runCli([
          'train-head',
          '--cache',
          cache,
          '--head',
          h,
          '--weight-decay',
          '0.01',
          '--normalize',
          'l2',
          '--json',
        ])
      ).stdout,
    );
    assert.equal(pinned.setting.solver, 'lbfgs');
    assert.deepEqual(pinned.sweep.fixed, ['--weight-decay', '--normalize']);
    assert.equal(pinned.sweep.candidates.length, 1);
    assert.ok(Math.abs(pinned.setting.c - 1 / (0.01 * pinned.trainRows)) < 1e-12);
    const hidden = JSON.parse(
      (await runCli(['train-head', '--cache', cache, '--head', h, '--hidden', '4', '--epochs', '3', '--json'])).stdout,
    );
    assert.equal(hidden.setting.solver, 'minibatch');
    const noSweep = await runCli(['train-head', '--cache', cache, '--head', h, '--no-sweep', '--epochs', '2']);
    assert.match(noSweep.stderr, /solver minibatch \(no sweep\)/);
    const refused = await runCli(['train-head', '--cache', cache, '--head', h, '--solver', 'lbfgs', '--hidden', '4']);
    assert.equal(refused.code, 2);
    assert.match(
      refused.stderr.trim(),
      /^featcache: --solver: expected minibatch or auto with a hidden layer \(--hidden 4\): L-BFGS fits a linear head/,
    );
    const mixed = await runCli([
      'train-head',
      '--cache',
      cache,
      '--head',
      h,
      '--solver',
      'lbfgs',
      '--lr',
      '0.5',
      '--epochs',
      '3',
    ]);
    assert.equal(mixed.code, 2);
    assert.match(
      mixed.stderr.trim(),
      /^featcache: --solver: expected minibatch or auto with --lr, --epochs \(L-BFGS has no learning rate, epochs or batches; drop them, or pin C with --weight-decay\)/,
    );
    const bad = await runCli(['train-head', '--cache', cache, '--head', h, '--solver', 'newton']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /Invalid values:[\s\S]*solver[\s\S]*"newton"[\s\S]*"lbfgs"/);
  });

  it('same seed, same head, byte for byte', async () => {
    const [a, b] = [path.join(dir, 'same-a'), path.join(dir, 'same-b')];
    for (const h of [a, b])
      assert.equal(
        (await runCli(['train-head', '--cache', cache, '--head', h, '--seed', '5', '--epochs', '4'])).code,
        0,
      );
    for (const f of ['model.json', 'weights.bin'])
      assert.ok((await fs.readFile(path.join(a, f))).equals(await fs.readFile(path.join(b, f))), f);
    const strip = (t: string) => {
      const j = JSON.parse(t);
      delete j.provenance.trainedAt;
      return j;
    };
    assert.deepEqual(
      strip(await fs.readFile(path.join(a, 'head.json'), 'utf8')),
      strip(await fs.readFile(path.join(b, 'head.json'), 'utf8')),
    );
  });

  it('never deletes what it did not write: a non-empty directory without a featcache head.json is refused', async () => {
    const models = path.join(dir, 'models');
    await fs.mkdir(models);
    await fs.writeFile(path.join(models, 'resnet50.onnx'), 'weights');
    await fs.writeFile(path.join(models, 'notes.txt'), 'notes');
    const r = await runCli(['train-head', '--cache', cache, '--head', models, '--epochs', '2', '--no-sweep']);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr.trim(),
      /^featcache: --head .*models: the directory is not empty and holds no featcache head\.json.*choose a new or empty directory/,
    );
    assert.deepEqual((await fs.readdir(models)).sort(), ['notes.txt', 'resnet50.onnx']);
    const own = path.join(dir, 'own-head');
    assert.equal(
      (await runCli(['train-head', '--cache', cache, '--head', own, '--epochs', '2', '--no-sweep'])).code,
      0,
    );
    await fs.writeFile(path.join(own, 'photo.jpg'), 'jpeg');
    assert.equal(
      (await runCli(['train-head', '--cache', cache, '--head', own, '--epochs', '2', '--no-sweep'])).code,
      0,
    );
    assert.equal(await fs.readFile(path.join(own, 'photo.jpg'), 'utf8'), 'jpeg');
  });

  it('a class with one training image is trained on and named, not a crash', async () => {
    const data = path.join(dir, 'one-image');
    let seed = 500;
    for (const [split, n] of [
      ['train', 8],
      ['val', 3],
    ] as const) {
      for (const [name, rgb] of [
        ['blue', [40, 60, 200]],
        ['green', [50, 190, 60]],
        ['red', [200, 50, 40]],
      ] as const) {
        for (let i = 0; i < (name === 'red' && split === 'train' ? 1 : n); i++)
          await writeColourImage(
            path.join(data, split, name, `${i}.png`),
            [...rgb] as [number, number, number],
            seed++,
          );
      }
    }
    const c = path.join(dir, 'one-cache');
    for (const split of ['train', 'val'])
      assert.equal(
        (await runCli(['extract', '--data', data, '--split', split, '--model', model, '--cache', c, '--device', 'cpu']))
          .code,
        0,
      );
    const r = await runCli(['train-head', '--cache', c, '--head', path.join(dir, 'one-head'), '--epochs', '5']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /class "red" has one distinct training image: it cannot be held out, so selection does not score it \(still trained on\)/,
    );
  });

  it('says when a class has val images but none to train on', async () => {
    const data = path.join(dir, 'val-only');
    let seed = 900;
    for (const [split, names] of [
      ['train', ['blue', 'green']],
      ['val', ['blue', 'green', 'red']],
    ] as const) {
      const colours = { blue: [40, 60, 200], green: [50, 190, 60], red: [200, 50, 40] } as const;
      for (const name of names)
        for (let i = 0; i < 4; i++)
          await writeColourImage(
            path.join(data, split, name, `${i}.png`),
            [...colours[name]] as [number, number, number],
            seed++,
          );
    }
    const c = path.join(dir, 'val-only-cache');
    for (const split of ['train', 'val'])
      assert.equal(
        (await runCli(['extract', '--data', data, '--split', split, '--model', model, '--cache', c, '--device', 'cpu']))
          .code,
        0,
      );
    const r = await runCli(['train-head', '--cache', c, '--head', path.join(dir, 'val-only-head')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /^train-head: class "red" has val images but no training images: the head cannot predict it$/m,
    );
  });

  it('validates on a stratified --val-fraction of train when asked', async () => {
    const r = await runCli([
      'train-head',
      '--cache',
      cache,
      '--head',
      path.join(dir, 'head-frac'),
      '--val-fraction',
      '0.25',
      '--epochs',
      '3',
      '--json',
    ]);
    const result = JSON.parse(r.stdout);
    assert.equal(result.validation, 'fraction');
    assert.equal(result.valRows, 9);
    assert.equal(result.trainRows, 27);
  });

  it('predicts files, folders and globs: table, JSON lines, CSV and an HTML report', async () => {
    const val = path.join(dir, 'data', 'val');
    const json = await runCli([
      'predict',
      path.join(val, 'red'),
      path.join(val, 'blue', 'blue0.png'),
      `${val}/green/green[01].png`,
      '--head',
      head,
      '--top',
      '2',
      '--json',
      '--device',
      'cpu',
    ]);
    assert.equal(json.code, 0, json.stderr);
    const lines = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, 6 + 1 + 2);
    for (const line of lines) {
      assert.equal(line.top.length, 2);
      assert.equal(line.top[0].label, path.basename(path.dirname(line.path)), line.path);
      assert.ok(line.top[0].probability >= line.top[1].probability);
    }
    const csv = await runCli([
      'predict',
      path.join(val, 'red', 'red0.png'),
      '--head',
      head,
      '--csv',
      '--device',
      'cpu',
    ]);
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
    const r = await runCli([
      'predict',
      bad,
      path.join(dir, 'data', 'val', 'red', 'red0.png'),
      '--head',
      head,
      '--json',
      '--device',
      'cpu',
    ]);
    assert.equal(r.code, 3);
    const [first, second] = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.match(first.error, /unsupported image format/);
    assert.equal(second.top[0].label, 'red');
    assert.match(r.stderr, /1 of 2 images could not be read/);
  });

  it('refuses a head trained on another backbone, and a missing head', async () => {
    const other = await writeTinyModel(path.join(dir, 'other.onnx'), { pool: 'ReduceMean13' });
    const r = await runCli([
      'predict',
      path.join(dir, 'data', 'val', 'red'),
      '--head',
      head,
      '--model',
      other,
      '--device',
      'cpu',
    ]);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr.trim(),
      /^featcache: --model .*other\.onnx: sha256 [0-9a-f]{12}… is not the backbone the head .* was trained on/,
    );
    const missing = await runCli(['predict', path.join(dir, 'data', 'val'), '--head', path.join(dir, 'nohead')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--head .*nohead: no head.json here; train one with 'featcache train-head/);
  });

  it('records the TensorFlow.js backend used, and refuses one that is not installed', async () => {
    const r = await runCli([
      'train-head',
      '--cache',
      cache,
      '--head',
      path.join(dir, 'head-cpu'),
      '--epochs',
      '2',
      '--backend',
      'cpu',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).backend, 'cpu');
    const info = JSON.parse(await fs.readFile(path.join(dir, 'head-cpu', 'head.json'), 'utf8'));
    assert.equal(info.provenance.backend, 'cpu');
    const hasNode = await import(TFJS_NODE).then(
      () => true,
      () => false,
    );
    const t = await runCli([
      'train-head',
      '--cache',
      cache,
      '--head',
      path.join(dir, 'head-tf'),
      '--epochs',
      '2',
      '--no-sweep',
      '--backend',
      'tensorflow',
      '--json',
    ]);
    // Either branch asserts: refused when tfjs-node is absent, used and recorded when it is present.
    if (hasNode) {
      assert.equal(t.code, 0, t.stderr);
      assert.equal(JSON.parse(t.stdout).backend, 'tensorflow');
    } else {
      assert.equal(t.code, 1);
      assert.match(t.stderr.trim(), /^featcache: --backend tensorflow: @tensorflow\/tfjs-node is not installed/);
    }
  });

  it('refuses bad flags in one line', async () => {
    const r = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'h2'), '--optimizer', 'rmsprop']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--optimizer|Invalid values/);
    const numbers: [string, string, RegExp][] = [
      ['--momentum', 'abc', /^featcache: --momentum: expected a number in \[0, 1\), got not a number$/],
      ['--weight-decay', 'abc', /^featcache: --weight-decay: expected a number >= 0, got not a number$/],
      ['--weight-decay', '-1', /^featcache: --weight-decay: expected a number >= 0, got -1$/],
      ['--lr', 'Infinity', /^featcache: --lr: expected a positive number, got Infinity$/],
      ['--gamma', '0', /^featcache: --gamma: expected a positive number, got 0$/],
      ['--epochs', '2.5', /^featcache: --epochs: expected a positive integer, got 2\.5$/],
      ['--batch-size', 'x', /^featcache: --batch-size: expected a positive integer, got not a number$/],
      ['--seed', '-3', /^featcache: --seed: expected an integer >= 0, got -3$/],
      ['--holdout-fraction', '1', /^featcache: --holdout-fraction: expected a number between 0 and 1, got 1$/],
      ['--val-fraction', 'abc', /^featcache: --val-fraction: expected a number between 0 and 1, got not a number$/],
    ];
    for (const [flag, value, message] of numbers) {
      const bad = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'h-bad'), flag, value]);
      assert.equal(bad.code, 2, `${flag} ${value}`);
      assert.match(bad.stderr.trim(), message);
    }
    await assert.rejects(fs.access(path.join(dir, 'h-bad')), 'nothing written');
    const e = await runCli(['train-head', '--cache', path.join(dir, 'nocache'), '--head', path.join(dir, 'h3')]);
    assert.equal(e.code, 2);
    assert.match(e.stderr, /--cache .*nocache: no feature cache here/);
  });
});

// Skipped per test (not per suite), so a machine without ../shared still counts it as skipped.
describe('accuracy on real data: MobileNetV2-int8 on hymenoptera', () => {
  // Extracted once, by the first test that runs.
  let extracted: Promise<{ dir: string; cache: string }> | undefined;
  const hymenopteraCache = () =>
    (extracted ??= (async () => {
      const dir = await tempDir();
      const cache = path.join(dir, 'features');
      for (const split of ['train', 'val']) {
        const r = await extractMobilenet(hymenoptera, split, cache);
        assert.equal(r.code, 0, r.stderr);
      }
      return { dir, cache };
    })());

  it('reaches validation accuracy >= 0.92', { skip: needsShared(mobilenetModel, hymenoptera) }, async () => {
    const { dir, cache } = await hymenopteraCache();
    const r = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'head'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.valRows, 153);
    assert.ok(result.metrics.top1 >= 0.92, `val top-1 ${result.metrics.top1}`);
    assert.ok(result.calibration.after.ece <= 0.08, `ECE after temperature ${result.calibration.after.ece}`);
  });

  it(
    "the probe ships a temperature fitted out of fold for its refit: on val it beats the sweep's fold-model temperature",
    { skip: needsShared(mobilenetModel, hymenoptera) },
    async () => {
      const { dir, cache } = await hymenopteraCache();
      const head = path.join(dir, 'head-oof');
      const r = await runCli(['train-head', '--cache', cache, '--head', head, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout);
      const fit = result.temperatureFit;
      assert.equal(fit.method, 'out-of-fold');
      assert.equal(fit.rows, 245, 'every train row predicted by a fold model that never saw it');
      assert.equal(fit.c, result.setting.c);
      assert.equal(fit.lambda, result.setting.weightDecay, 'fold models at the refit λ');
      const info = JSON.parse(await fs.readFile(path.join(head, 'head.json'), 'utf8'));
      assert.equal(info.temperature, result.temperature);
      assert.deepEqual(info.temperatureFit, fit);
      const metrics = JSON.parse(await fs.readFile(path.join(head, 'metrics.json'), 'utf8'));
      assert.deepEqual(metrics.temperatureFit, fit);
      // Val NLL, recomputed from the head's files, at the shipped T, at the sweep's T (today's choice) and at 1.
      const valSet = await (await FeatureCache.open(cache)).read('val');
      const nllAt = async (t: number) => {
        const plain = await plainProbabilities(head, valSet.features, valSet.count, t);
        return plainCalibration(plain.probabilities, valSet.labels, 2).nll;
      };
      const [shipped, sweep, none] = [
        await nllAt(result.temperature),
        await nllAt(fit.sweepTemperature),
        await nllAt(1),
      ];
      assert.ok(
        Math.abs(shipped - result.calibration.after.nll) < 1e-5,
        `${shipped} vs ${result.calibration.after.nll}`,
      );
      assert.ok(
        shipped < sweep,
        `val NLL at the shipped T ${result.temperature}: ${shipped}; at the sweep's T ${fit.sweepTemperature}: ${sweep}`,
      );
      // The fold models (90 % of the rows) are still a little less confident than the refit: within 0.005 nats of
      // no temperature on 153 val rows (the sweep's temperature costs 0.010 here).
      assert.ok(shipped <= none + 0.005, `val NLL ${none} -> ${shipped} (T = ${result.temperature})`);
    },
  );

  it(
    'the streamed head: its temperature, fitted out of fold at the refit λ, does not worsen val NLL',
    { skip: needsShared(mobilenetModel, hymenoptera) },
    async () => {
      const { dir, cache } = await hymenopteraCache();
      const head = path.join(dir, 'head-stream');
      const r = await runCli(['train-head', '--cache', cache, '--head', head, '--solver', 'stream', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout);
      assert.equal(result.setting.solver, 'stream');
      // 245 rows: the hold-out (~20 %) is over the refit share, so the saved head saw every row.
      assert.equal(result.scale.refit, true);
      assert.equal(result.trainRows, 245);
      const { before: b, after: a } = result.calibration;
      assert.ok(a.nll <= b.nll + 1e-9, `val NLL ${b.nll} -> ${a.nll} (T = ${result.temperature})`);
      assert.ok(a.ece <= 0.05, `val ECE ${b.ece} -> ${a.ece}`);
      assert.ok(result.metrics.top1 >= 0.92, `val top-1 ${result.metrics.top1}`);
      const { tf } = await loadTf('auto');
      assert.equal((await loadHead(tf, head)).info.temperature, result.temperature);
    },
  );
});

describe('calibration with many small classes: 120 classes, 2–17 train rows each (synthetic stand-ins)', () => {
  it('the default head ships calibrated: val ECE ≤ 0.05 measured on enough rows, with the sampling floor reported', async () => {
    for (const seed of [1, 2]) {
      const dir = await tempDir();
      const cache = path.join(dir, 'features');
      // Val holds four times each class's train rows (same class balance): ~4,800 rows, a floor of ~0.02. A val of a
      // third as many (~400 rows) has a floor of ~0.06, above the goal, and cannot show it.
      await writeFewShotCache(cache, seed, { valShare: 4 });
      const r = await runCli(['train-head', '--cache', cache, '--head', path.join(dir, 'head'), '--json']);
      assert.equal(r.code, 0, r.stderr);
      const { calibration: c, valRows, trainRows } = JSON.parse(r.stdout);
      assert.ok(trainRows < 17 * 120 && valRows === 4 * trainRows, `${trainRows} train / ${valRows} val`);
      assert.ok(c.after.ece <= 0.05, `seed ${seed}: val ECE ${c.before.ece} -> ${c.after.ece}`);
      assert.ok(c.after.ece < c.before.ece && c.after.nll < c.before.nll, `seed ${seed}: ${JSON.stringify(c)}`);
      assert.ok(c.after.eceFloor.mean > 0 && c.after.eceFloor.p95 < 0.03, JSON.stringify(c.after.eceFloor));
    }
  });
});
