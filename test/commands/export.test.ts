import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { ensureManifest } from '../../src/store/manifest.js';
import { writePart } from '../../src/store/part.js';
import { FeatureCache } from '../../src/store/reader.js';
import { hymenoptera, mobilenetModel, needsShared, runCli, tempDir, writeColourFolder, writeTinyModel } from '../support/helpers.js';

const python = '/usr/bin/python3';
const hasNumpy = (() => {
  try {
    execFileSync(python, ['-c', 'import numpy'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const hasTool = (name: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

describe('export formats (tiny model cache)', () => {
  let dir: string;
  let cache: string;
  before(async () => {
    dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 4);
    cache = path.join(dir, 'features');
    for (const split of ['train', 'val']) {
      assert.equal((await runCli(['extract', '--data', path.join(dir, 'data'), '--split', split, '--model', model, '--cache', cache, '--device', 'cpu'])).code, 0);
    }
  });
  const exportCli = (...args: string[]) => runCli(['export', '--cache', cache, '--json', ...args]);

  it('libsvm: label then 1-based ascending index:value pairs, zeros omitted, values round-trip', async () => {
    const out = path.join(dir, 'train.svm');
    const r = await exportCli('--split', 'train', '--format', 'libsvm', '--out', out);
    assert.equal(r.code, 0, r.stderr);
    const set = await (await FeatureCache.open(cache)).read('train');
    const lines = (await fs.readFile(out, 'utf8')).trim().split('\n');
    assert.equal(lines.length, 12);
    const byLabel = new Map<string, number>();
    for (const line of lines) {
      const [label, ...pairs] = line.split(' ');
      byLabel.set(label!, (byLabel.get(label!) ?? 0) + 1);
      const indices = pairs.map((p) => Number(p.split(':')[0]));
      assert.deepEqual(indices, [...indices].sort((a, b) => a - b));
      assert.ok(indices.every((i) => i >= 1 && i <= 3));
      assert.ok(pairs.every((p) => Number(p.split(':')[1]) !== 0), 'zeros omitted');
    }
    assert.deepEqual([...byLabel.entries()].sort(), [['0', 4], ['1', 4], ['2', 4]]);
    const values = lines.flatMap((l) => l.split(' ').slice(1).map((p) => Math.fround(Number(p.split(':')[1]))));
    const stored = [...set.features].filter((v) => v !== 0);
    assert.deepEqual([...values].sort(), [...stored].sort(), 'float32 values round-trip');
    assert.equal(await fs.readFile(`${out}.classes.txt`, 'utf8'), 'blue\ngreen\nred\n');
    const provenance = JSON.parse(await fs.readFile(`${out}.provenance.json`, 'utf8'));
    assert.match(provenance.modelSha256, /^[0-9a-f]{64}$/);
    assert.equal(provenance.tappedTensor, 'pooled');
    assert.equal(provenance.preset.name, 'torchvision');
    assert.equal(provenance.rows, 12);
  });

  it('standard: statistics are fitted on train only, saved, and reused with --stats', async () => {
    const trainOut = path.join(dir, 'train-std.csv');
    const valOut = path.join(dir, 'val-std.csv');
    await exportCli('--split', 'train', '--format', 'csv', '--normalize', 'standard', '--out', trainOut);
    const r = await exportCli('--split', 'val', '--format', 'csv', '--normalize', 'standard', '--out', valOut);
    assert.equal(JSON.parse(r.stdout).normalization.fittedOn, 'train');
    const trainStats = JSON.parse(await fs.readFile(`${trainOut}.stats.json`, 'utf8'));
    const valStats = JSON.parse(await fs.readFile(`${valOut}.stats.json`, 'utf8'));
    assert.deepEqual(valStats, trainStats, 'val was standardised with train statistics');
    const train = await (await FeatureCache.open(cache)).read('train');
    const mean0 = Array.from({ length: train.count }, (_, i) => train.features[i * 3]!).reduce((a, b) => a + b, 0) / train.count;
    assert.ok(Math.abs(trainStats.mean[0] - mean0) < 1e-5);
    const reused = path.join(dir, 'val-reused.csv');
    await exportCli('--split', 'val', '--format', 'csv', '--normalize', 'standard', '--stats', `${trainOut}.stats.json`, '--out', reused);
    assert.equal(await fs.readFile(reused, 'utf8'), await fs.readFile(valOut, 'utf8'));
    const csv = (await fs.readFile(valOut, 'utf8')).split('\n');
    assert.equal(csv[0], 'path,label,label_name,f0,f1,f2');
    assert.match(csv[1]!, /^val\/blue\/blue0\.png,0,blue,-?\d/);
  });

  it('npy: numpy reads float32 [N, D], int32 labels, paths and classes', { skip: hasNumpy ? false : 'needs /usr/bin/python3 with numpy (apt-get install python3-numpy)' }, async () => {
    const out = path.join(dir, 'npy');
    const r = await exportCli('--split', 'train', '--format', 'npy', '--normalize', 'l2', '--out', out);
    assert.equal(r.code, 0, r.stderr);
    const check = execFileSync(python, ['-c', [
      'import numpy as np, json, sys',
      `d = "${out}"`,
      'X = np.load(d + "/features.npy"); y = np.load(d + "/labels.npy")',
      'print(json.dumps({"shape": X.shape, "dtype": str(X.dtype), "ydtype": str(y.dtype), "y": y.tolist(), "norms": np.linalg.norm(X, axis=1).round(5).tolist()}))',
    ].join('\n')]).toString();
    const parsed = JSON.parse(check);
    assert.deepEqual(parsed.shape, [12, 3]);
    assert.equal(parsed.dtype, 'float32');
    assert.equal(parsed.ydtype, 'int32');
    assert.deepEqual(parsed.y.sort(), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    assert.ok(parsed.norms.every((n: number) => Math.abs(n - 1) < 1e-4));
    assert.equal((await fs.readFile(path.join(out, 'paths.txt'), 'utf8')).trim().split('\n').length, 12);
    assert.equal(await fs.readFile(path.join(out, 'classes.txt'), 'utf8'), 'blue\ngreen\nred\n');
  });

  it('errors: unknown split, empty cache, unwritable path — one line each, nothing half-written', async () => {
    const unknown = await exportCli('--split', 'test', '--out', path.join(dir, 'x.svm'));
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr.trim(), /^featcache: --split test: .*available: train, val$/);
    const empty = await runCli(['export', '--cache', path.join(dir, 'nothing'), '--out', path.join(dir, 'y.svm')]);
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /no feature cache here/);
    await fs.writeFile(path.join(dir, 'afile'), '');
    const unwritable = await exportCli('--split', 'train', '--out', path.join(dir, 'afile', 'sub', 'out.svm'));
    assert.equal(unwritable.code, 1);
    assert.match(unwritable.stderr.trim(), /^featcache: --out .*out\.svm: cannot write \((ENOTDIR|ENOENT)\); nothing was written$/);
    assert.ok(!existsSync(path.join(dir, 'x.svm')) && !existsSync(path.join(dir, 'y.svm')));
  });

  it('refuses shards whose feature dimensions disagree', async () => {
    const bad = path.join(dir, 'mixed');
    await ensureManifest(bad, { format: 1, modelFile: 'm', modelSha256: 'a', tappedTensor: 't', tap: {}, preset: {}, exif: 'ignore', icc: 'ignore', dim: 2, classes: ['a'], createdAt: '', versions: {} });
    await fs.mkdir(path.join(bad, 'train'), { recursive: true });
    const part = (dim: number) => ({ meta: { split: 'train', shard: '0of2', runId: 'r', dim, failures: [], removed: [], provenance: {} }, rows: [{ path: `p${dim}`, label: 0, labelName: 'a', size: 1, mtimeMs: 1 }], features: new Float32Array(dim) });
    await writePart(path.join(bad, 'train', 'part-1.arrow'), part(2));
    await writePart(path.join(bad, 'train', 'part-2.arrow'), part(3));
    const r = await runCli(['export', '--cache', bad, '--out', path.join(dir, 'mixed.svm')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim(), /part-2\.arrow: features are 3-d but the cache's are 2-d/);
  });
});

describe('interop with LIBSVM and LIBLINEAR on real features', { skip: needsShared(mobilenetModel, hymenoptera) || (hasTool('svm-train') && hasTool('liblinear-train') ? false : 'needs svm-train and liblinear-train (apt-get install libsvm-tools liblinear-tools)') }, () => {
  it('a linear SVM on the MobileNetV2 export beats the majority-class guess by a wide margin', async () => {
    const dir = await tempDir();
    const cache = path.join(dir, 'features');
    for (const split of ['train', 'val']) {
      assert.equal((await runCli(['extract', '--data', hymenoptera, '--split', split, '--model', mobilenetModel, '--cache', cache, '--device', 'cpu'])).code, 0);
      assert.equal((await runCli(['export', '--cache', cache, '--split', split, '--format', 'libsvm', '--normalize', 'l2', '--out', path.join(dir, `${split}.svm`)])).code, 0);
    }
    const svm = (args: string[]) => execFileSync(args[0]!, args.slice(1), { cwd: dir }).toString();
    svm(['svm-train', '-q', '-t', '0', 'train.svm', 'svm.model']);
    const libsvm = Number(/Accuracy = ([\d.]+)%/.exec(svm(['svm-predict', 'val.svm', 'svm.model', 'svm.out']))![1]) / 100;
    svm(['liblinear-train', '-q', 'train.svm', 'linear.model']);
    const liblinear = Number(/Accuracy = ([\d.]+)%/.exec(svm(['liblinear-predict', 'val.svm', 'linear.model', 'linear.out']))![1]) / 100;
    const labels = (await fs.readFile(path.join(dir, 'val.svm'), 'utf8')).trim().split('\n').map((l) => l.split(' ')[0]);
    const majority = Math.max(...['0', '1'].map((c) => labels.filter((l) => l === c).length)) / labels.length;
    assert.ok(libsvm >= majority + 0.25, `LIBSVM ${libsvm} vs majority ${majority}`);
    assert.ok(liblinear >= majority + 0.25, `LIBLINEAR ${liblinear} vs majority ${majority}`);
  });
});
