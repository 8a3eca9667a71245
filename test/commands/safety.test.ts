/** The user's files and the cache's integrity: each case here broke on an adversarial pass, and must not again. */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { FeatureCache } from '../../src/store/reader.js';
import {
  runCli,
  tempDir,
  writeColourFolder,
  writeImage,
  writeImageFolder,
  writeTinyModel,
} from '../support/helpers.js';

async function partsOf(cache: string, split = 'train'): Promise<string[]> {
  return (await fs.readdir(path.join(cache, split)))
    .filter((n) => /^part-.*\.arrow$/.test(n))
    .sort()
    .map((n) => path.join(cache, split, n));
}

describe('a committed part damaged after its commit', () => {
  let dir: string;
  let model: string;
  before(async () => {
    dir = await tempDir();
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeImageFolder(path.join(dir, 'data'), { train: { ants: 6, bees: 6 } });
  });
  const extract = (cache: string) =>
    runCli([
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      cache,
      '--device',
      'cpu',
      '--part-rows',
      '4',
      '--batch-size',
      '4',
      '--json',
    ]);

  for (const damage of ['truncated', 'zeroed'] as const) {
    it(`${damage}: info --check fails, extract sets it aside and re-extracts its rows, readers see every row again`, async () => {
      const cache = path.join(dir, `cache-${damage}`);
      assert.equal((await extract(cache)).code, 0);
      const before = await (await FeatureCache.open(cache)).read('train');
      const [victim] = await partsOf(cache);
      const size = (await fs.stat(victim!)).size;
      await fs.writeFile(
        victim!,
        damage === 'truncated' ? (await fs.readFile(victim!)).subarray(0, size >> 1) : Buffer.alloc(size),
      );

      const check = await runCli(['info', '--cache', cache, '--check', '--json']);
      assert.equal(check.code, 1, 'damage exits non-zero');
      const report = JSON.parse(check.stdout);
      assert.equal(report.healthy, false);
      assert.equal(report.splits[0].damaged[0].file, victim);
      assert.match(
        report.splits[0].damaged[0].problem,
        damage === 'truncated' ? /^truncated: \d+ of \d+ bytes$/ : /sha256 mismatch/,
      );
      await assert.rejects((await FeatureCache.open(cache)).read('train'), /damaged part file .*re-run extract/);

      const again = await extract(cache);
      assert.equal(again.code, 0, again.stderr);
      const result = JSON.parse(again.stdout);
      assert.equal(result.extracted, 4, "the damaged part's 4 rows are extracted again, not reported unchanged");
      assert.equal(result.unchanged, 8);
      assert.match(again.stderr, /is damaged .*set aside as part-.*\.arrow\.damaged, its rows are extracted again/);
      assert.ok(existsSync(`${victim}.damaged`), 'the damaged part is kept under another name, not deleted');

      const after = await (await FeatureCache.open(cache)).read('train');
      assert.deepEqual(after.paths, before.paths);
      assert.deepEqual(Array.from(after.features), Array.from(before.features), "features equal the undamaged run's");
      const healthy = await runCli(['info', '--cache', cache, '--check', '--json']);
      assert.equal(healthy.code, 0, healthy.stdout);
      assert.equal(JSON.parse(healthy.stdout).splits[0].setAside.length, 1);
    });
  }
});

describe('files featcache reads are checked against their schema', () => {
  it('a cache.json of {} or of the wrong types names the file, what is wrong and the remedy', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeImageFolder(path.join(dir, 'data'), { train: { a: 2, b: 2 } });
    const cache = path.join(dir, 'cache');
    await fs.mkdir(cache);
    for (const content of ['{}', '{"format":1,"dim":"big","classes":[1]}', '[1,2]', 'nonsense']) {
      await fs.writeFile(path.join(cache, 'cache.json'), content);
      for (const args of [
        ['info', '--cache', cache],
        ['extract', '--data', path.join(dir, 'data'), '--model', model, '--cache', cache, '--device', 'cpu'],
      ]) {
        const r = await runCli(args);
        assert.equal(r.code, 1, `${args[0]} with cache.json ${content}`);
        assert.match(
          r.stderr,
          /^featcache: .*cache\.json: (not valid JSON|not a featcache cache manifest \(.+\)); featcache writes it on the first extract/,
        );
        assert.doesNotMatch(r.stderr, /undefined|Cannot read properties/);
      }
    }
    const r = await runCli(['info', '--cache', cache]);
    assert.ok(r.stderr.split('\n').filter(Boolean).length === 1, 'one line');
  });
});

describe('flags that take numbers or ranges', () => {
  let dir: string;
  let model: string;
  before(async () => {
    dir = await tempDir();
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeImageFolder(path.join(dir, 'data'), { '.': { a: 3, b: 3 } });
  });
  const extract = (...extra: string[]) =>
    runCli([
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      path.join(dir, 'cache'),
      '--device',
      'cpu',
      ...extra,
    ]);

  it('refuses non-numbers instead of storing null', async () => {
    for (const [flag, value] of [
      ['--seed', 'abc'],
      ['--batch-size', 'many'],
      ['--part-rows', '1.5'],
      ['--threads', '-1'],
      ['--val-fraction', 'half'],
    ]) {
      const r = await extract(flag!, value!);
      assert.equal(r.code, 2, `${flag} ${value}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^featcache: ${flag}: expected `), r.stderr);
    }
  });

  it('names --shard when its value starts with a minus', async () => {
    const r = await extract('--shard', '-1/2');
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim(), 'featcache: --shard: expected K/N with 0 <= K < N (e.g. 0/4), got "-1/2"');
  });

  it('caps a huge --batch-size so memory stays bounded, and says so', async () => {
    const r = await extract('--batch-size', '100000', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /--batch-size 100000 capped to \d+ \(a batch's pixels stay under 256 MiB\)/);
    assert.equal(JSON.parse(r.stdout).extracted, 6);
  });
});

describe('split folders as datasets name them', () => {
  it('training/ and validation/ are splits; classes are the union of both', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeImageFolder(path.join(dir, 'monkeys'), {
      training: { n0: 2, n1: 2, n2: 1 },
      validation: { n0: 1, n1: 1 },
    });
    const cache = path.join(dir, 'cache');
    for (const split of ['training', 'validation']) {
      const r = await runCli([
        'extract',
        '--data',
        path.join(dir, 'monkeys'),
        '--split',
        split,
        '--model',
        model,
        '--cache',
        cache,
        '--device',
        'cpu',
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    const reader = await FeatureCache.open(cache);
    assert.deepEqual(reader.manifest.classes, ['n0', 'n1', 'n2']);
    assert.deepEqual(await reader.splits(), ['training', 'validation']);
    const val = await reader.read('validation');
    assert.deepEqual(val.paths, ['validation/n0/img0.jpg', 'validation/n1/img0.jpg']);
    assert.deepEqual(Array.from(val.labels), [0, 1]);
  });
});

describe('symlinks that lead outside the data folder', () => {
  it('are refused with the link named, and read with --follow-symlinks', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeImageFolder(path.join(dir, 'data'), { train: { ants: 2, bees: 2 } });
    await writeImageFolder(path.join(dir, 'elsewhere'), { pics: { x: 3 } });
    await fs.symlink(path.join(dir, 'elsewhere', 'pics', 'x'), path.join(dir, 'data', 'train', 'outside_link'));
    const args = [
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      path.join(dir, 'cache'),
      '--device',
      'cpu',
      '--json',
    ];
    const refused = await runCli(args);
    assert.equal(refused.code, 2);
    assert.match(
      refused.stderr,
      /outside_link: a symlink that leads outside the data folder .*; remove it, or pass --follow-symlinks to read it/,
    );
    assert.ok(!existsSync(path.join(dir, 'cache', 'train')), 'nothing extracted');
    const followed = await runCli([...args, '--follow-symlinks']);
    assert.equal(followed.code, 0, followed.stderr);
    assert.equal(JSON.parse(followed.stdout).extracted, 7);
    const inside = await tempDir();
    await writeImageFolder(path.join(inside, 'data'), { train: { ants: 2 } });
    await fs.symlink(path.join(inside, 'data', 'train', 'ants'), path.join(inside, 'data', 'train', 'also_ants'));
    const r = await runCli([
      'extract',
      '--data',
      path.join(inside, 'data'),
      '--model',
      model,
      '--cache',
      path.join(inside, 'cache'),
      '--device',
      'cpu',
      '--json',
    ]);
    assert.equal(r.code, 0, 'a symlink inside the data folder is fine');
  });
});

describe('predict with inputs that are missing or unreadable', () => {
  it('predicts the good ones, reports each bad one, exits 3', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 4);
    const cache = path.join(dir, 'cache');
    for (const split of ['train', 'val']) {
      assert.equal(
        (
          await runCli([
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
          ])
        ).code,
        0,
      );
    }
    const head = path.join(dir, 'head');
    const t = await runCli(['train-head', '--cache', cache, '--head', head, '--epochs', '3']);
    assert.equal(t.code, 0, t.stderr);
    const good = path.join(dir, 'data', 'val', 'red', 'red0.png');
    const bad = path.join(dir, 'bad');
    await fs.mkdir(bad);
    await fs.writeFile(path.join(bad, 'broken.jpg'), 'not a jpeg');
    await writeImage(path.join(bad, 'fine.png'), 3, { format: 'png' });
    const r = await runCli([
      'predict',
      good,
      bad,
      path.join(dir, 'nonexist.jpg'),
      '--head',
      head,
      '--json',
      '--device',
      'cpu',
    ]);
    assert.equal(r.code, 3, r.stderr);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const byPath = new Map(lines.map((p) => [path.basename(p.path), p]));
    assert.equal(lines.length, 4);
    assert.ok(byPath.get('red0.png').top.length > 0 && !byPath.get('red0.png').error);
    assert.ok(byPath.get('fine.png').top.length > 0);
    assert.match(byPath.get('broken.jpg').error, /unsupported image format|Input buffer|corrupt/i);
    assert.equal(byPath.get('nonexist.jpg').error, 'no such file, and as a glob it matches no images');
    assert.match(r.stderr, /predict: 2 of 4 images could not be read/);
  });
});
