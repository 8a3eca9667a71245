import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { readPart } from '../../src/store/part.js';
import { FeatureCache } from '../../src/store/reader.js';
import {
  cliPath,
  cosine,
  hymenoptera,
  mobilenetModel,
  needsShared,
  pngBomb,
  readFloat32,
  resnetDir,
  resnetModel,
  runCli,
  sharedDir,
  tempDir,
  writeImage,
  writeImageFolder,
  writeTinyModel,
} from '../support/helpers.js';
import { CUDA_WORKS_SKIP, cudaLoads } from '../support/device.js';

async function snapshot(cache: string, split = 'train') {
  const set = await (await FeatureCache.open(cache)).read(split);
  return { paths: set.paths, features: [...set.features], labels: [...set.labels] };
}

/** Rows physically stored across all part files (duplicates would show here even if the reader hid them). */
async function physicalRows(cache: string, split = 'train'): Promise<string[]> {
  const reader = await FeatureCache.open(cache);
  const rows: string[] = [];
  for (const file of await reader.partFiles(split)) rows.push(...(await readPart(file)).rows.map((r) => r.path));
  return rows;
}

describe('extract: ResNet50 parity end to end', () => {
  it(
    "every fixture image's cached feature has cosine >= 0.9998 with the PyTorch hook output",
    { skip: needsShared(resnetModel) },
    async () => {
      const manifest = JSON.parse(await fs.readFile(path.join(resnetDir, 'manifest.json'), 'utf8'));
      const dir = await tempDir();
      const list = path.join(dir, 'images.txt');
      await fs.writeFile(
        list,
        manifest.items.map((i: { image: string }) => path.join(sharedDir, 'data', i.image)).join('\n'),
      );
      const cache = path.join(dir, 'features');
      const r = await runCli([
        'extract',
        '--data',
        list,
        '--model',
        resnetModel,
        '--cache',
        cache,
        '--device',
        'cpu',
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout);
      assert.equal(result.provider, 'cpu');
      assert.equal(result.dim, 2048);
      const set = await (await FeatureCache.open(cache)).read('train');
      assert.equal(set.count, 8);
      for (const [k, item] of manifest.items.entries()) {
        const row = set.paths.findIndex(
          (p) => path.join(dir, p) === path.join(sharedDir, 'data', item.image) || p.endsWith(item.image),
        );
        assert.ok(row >= 0, `row for ${item.image}`);
        const expected = readFloat32(path.join(resnetDir, item.avgpool.file));
        const got = set.features.subarray(row * 2048, (row + 1) * 2048);
        const c = cosine(got, expected);
        assert.ok(c >= 0.9998, `image ${k}: cosine ${c}`);
        // Centred cosine: random-weight features of different images already share a large common component.
        const mean = (v: ArrayLike<number>) => Array.from(v).reduce((s, x) => s + x, 0) / v.length;
        const mg = mean(got);
        const me = mean(expected);
        assert.ok(
          cosine(
            Array.from(got, (x) => x - mg),
            Array.from(expected, (x) => x - me),
          ) >= 0.99,
        );
      }
      const meta = JSON.parse(await fs.readFile(path.join(cache, 'cache.json'), 'utf8'));
      assert.equal(meta.modelSha256, 'ca5facb04ae0bd693ec8f1fae02c9dfe127a5c67267b37996f7769ead47154a0');
      assert.equal(meta.tappedTensor, '/avgpool/GlobalAveragePool_output_0');
      assert.equal(meta.preset.name, 'torchvision');
      assert.ok(meta.versions.onnxruntime && meta.versions.sharp && meta.versions.featcache);
    },
  );
});

describe('extract: incremental and refusals (tiny model)', () => {
  let dir: string;
  let model: string;
  before(async () => {
    dir = await tempDir();
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeImageFolder(path.join(dir, 'data'), { train: { ants: 3, bees: 3 }, val: { ants: 1, bees: 1 } });
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
      '--json',
      ...extra,
    ]);

  it('first run extracts everything with labels and names', async () => {
    const r = await extract();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).extracted, 6);
    const set = await (await FeatureCache.open(path.join(dir, 'cache'))).read('train');
    assert.deepEqual(set.labels.length, 6);
    assert.equal(set.dim, 3);
    assert.deepEqual(set.classes, ['ants', 'bees']);
  });

  it('reports the steady-state rate from the end of the first batch, without it under two batches', async () => {
    const r = await runCli([
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      path.join(dir, 'steady-cache'),
      '--batch-size',
      '2',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const { timings, extracted } = JSON.parse(r.stdout);
    assert.equal(extracted, 6);
    assert.equal(timings.steady.images, 4, 'the two batches after the first');
    assert.ok(timings.steady.seconds > 0 && timings.steady.seconds < timings.wallS - timings.setupS);
    assert.ok(Math.abs(timings.steady.imagesPerSecond - 4 / timings.steady.seconds) < 1e-6);
    const one = await runCli([
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--split',
      'val',
      '--model',
      model,
      '--cache',
      path.join(dir, 'steady-cache'),
      '--json',
    ]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(JSON.parse(one.stdout).timings.steady, undefined);
  });

  it('re-running on unchanged data does no inference', async () => {
    const r = await extract();
    const result = JSON.parse(r.stdout);
    assert.equal(result.extracted, 0);
    assert.equal(result.unchanged, 6);
    assert.equal(result.timings.inferS, 0);
  });

  it('adds new images, re-extracts changed ones and drops removed ones', async () => {
    const data = path.join(dir, 'data/train');
    const before = await snapshot(path.join(dir, 'cache'));
    await writeImage(path.join(data, 'bees/new.jpg'), 99);
    await writeImage(path.join(data, 'ants/img0.jpg'), 1234);
    await fs.rm(path.join(data, 'bees/img2.jpg'));
    const r = await extract();
    const result = JSON.parse(r.stdout);
    assert.deepEqual([result.extracted, result.unchanged, result.removed], [2, 4, 1]);
    const after = await snapshot(path.join(dir, 'cache'));
    assert.ok(after.paths.includes('train/bees/new.jpg'));
    assert.ok(!after.paths.includes('train/bees/img2.jpg'));
    const i0 = before.paths.indexOf('train/ants/img0.jpg');
    const j0 = after.paths.indexOf('train/ants/img0.jpg');
    assert.notDeepEqual(
      after.features.slice(j0 * 3, j0 * 3 + 3),
      before.features.slice(i0 * 3, i0 * 3 + 3),
      'changed image re-extracted',
    );
    assert.equal(new Set(after.paths).size, after.paths.length);
  });

  it('refuses another preset in the same cache and leaves it intact', async () => {
    const before = await snapshot(path.join(dir, 'cache'));
    const r = await extract('--preset', 'caffe');
    assert.equal(r.code, 2);
    assert.match(
      r.stderr.trim(),
      /^featcache: --cache .*: holds features of a different backbone or preprocessing \(preset torchvision vs caffe\)/,
    );
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.deepEqual(await snapshot(path.join(dir, 'cache')), before);
  });

  it('refuses an unknown split and a mismatched preset crop in one line', async () => {
    const r = await extract('--split', 'test');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--split: expected one of the split folders of .* \(train, val\), got "test"/);
    const r2 = await extract('--preset', 'inception', '--cache', path.join(dir, 'other'));
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /--preset inception: crops 299×299 but --model .* takes 224×224/);
  });

  it('refuses a missing model, a non-ONNX model and a model with no pool', async () => {
    const text = path.join(dir, 'notes.onnx');
    await fs.writeFile(text, 'definitely not protobuf \u0000\u0001');
    const noPool = await writeTinyModel(path.join(dir, 'nopool.onnx'), { pool: 'none' });
    for (const [file, pattern] of [
      [path.join(dir, 'missing.onnx'), /--model .*missing.onnx: no such file/],
      [text, /--model .*notes.onnx: not an ONNX model/],
      [noPool, /--tap avgpool: .*no global average pool; module scopes: features/],
    ] as const) {
      const r = await runCli([
        'extract',
        '--data',
        path.join(dir, 'data'),
        '--model',
        file,
        '--cache',
        path.join(dir, 'c2'),
        '--device',
        'cpu',
      ]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, pattern);
      assert.ok(!r.stderr.includes('    at '), 'no stack trace without --debug');
    }
  });

  it('reports an execution provider that cannot start (inside the inference worker) in one line, exit 1', async (t) => {
    if (await cudaLoads()) return t.skip(CUDA_WORKS_SKIP);
    const r = await extract('--device', 'cuda:0', '--cache', path.join(dir, 'cuda-cache'));
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim(), /^featcache: --device: no execution provider could run the model; cuda:0: /);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });

  it('refuses an empty dataset', async () => {
    const empty = path.join(dir, 'empty');
    await fs.mkdir(empty, { recursive: true });
    await fs.writeFile(path.join(empty, 'readme.md'), 'no images');
    const r = await runCli([
      'extract',
      '--data',
      empty,
      '--model',
      model,
      '--cache',
      path.join(dir, 'c3'),
      '--device',
      'cpu',
    ]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--data .*empty: no images found for split "train" \(1 files skipped/);
  });
});

describe('extract: an image rewritten at the same size', () => {
  it("is re-extracted because its mtime changed, and its row then holds the new content's features", async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    const data = path.join(dir, 'data', 'a');
    // Uncompressed PNGs of equal dimensions have equal sizes whatever their pixels.
    const png = (seed: number) => {
      const px = Buffer.alloc(40 * 30 * 3);
      for (let i = 0; i < px.length; i++) px[i] = (i * (seed * 2 + 1) + seed * 57) % 256;
      return sharp(px, { raw: { width: 40, height: 30, channels: 3 } })
        .png({ compressionLevel: 0 })
        .toBuffer();
    };
    await fs.mkdir(data, { recursive: true });
    const [first, second] = [await png(1), await png(2)];
    assert.equal(first.length, second.length, 'fixture: same size');
    assert.notDeepEqual(first, second, 'fixture: different content');
    const one = path.join(data, 'one.png');
    const two = path.join(data, 'two.png');
    await fs.writeFile(one, first);
    await fs.writeFile(two, second);
    const cache = path.join(dir, 'cache');
    const extract = async () => {
      const r = await runCli([
        'extract',
        '--data',
        path.join(dir, 'data'),
        '--model',
        model,
        '--cache',
        cache,
        '--device',
        'cpu',
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    const featuresOf = (set: Awaited<ReturnType<typeof snapshot>>, p: string) => {
      const k = set.paths.indexOf(p);
      assert.ok(k >= 0, p);
      return set.features.slice(k * 3, k * 3 + 3);
    };
    assert.equal((await extract()).extracted, 2);
    const before = await snapshot(cache);
    assert.notDeepEqual(
      featuresOf(before, 'a/one.png'),
      featuresOf(before, 'a/two.png'),
      'the two images have different features',
    );

    const { mtime } = await fs.stat(one);
    await fs.writeFile(one, second);
    // Set the new mtime explicitly: a coarse-timestamp filesystem could otherwise keep the old one.
    await fs.utimes(one, new Date(), new Date(mtime.getTime() + 5_000));
    assert.equal((await fs.stat(one)).size, first.length);
    const rewritten = await extract();
    assert.deepEqual([rewritten.extracted, rewritten.unchanged], [1, 1]);
    const after = await snapshot(cache);
    assert.deepEqual(
      featuresOf(after, 'a/one.png'),
      featuresOf(before, 'a/two.png'),
      "one.png now has two.png's content and features",
    );
    assert.deepEqual(featuresOf(after, 'a/two.png'), featuresOf(before, 'a/two.png'));

    // Touched without a content change: re-extracted (the stamp cannot tell), with identical features.
    const { mtime: twoTime } = await fs.stat(two);
    await fs.utimes(two, new Date(), new Date(twoTime.getTime() + 5_000));
    assert.deepEqual([(await extract()).extracted, (await extract()).extracted], [1, 0]);
    assert.deepEqual(await snapshot(cache), after);
  });
});

describe('extract: Kaggle labels.csv with --val-fraction', () => {
  it('two runs (train, val) give disjoint, complete, stratified splits with the CSV labels', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    const rows = ['id,breed'];
    for (let i = 0; i < 16; i++) {
      await writeImage(path.join(dir, 'dogs', 'train', `dog${i}.jpg`), i);
      rows.push(`dog${i},${i % 2 ? 'collie' : 'pug'}`);
    }
    await fs.writeFile(path.join(dir, 'dogs', 'labels.csv'), rows.join('\n'));
    const cache = path.join(dir, 'cache');
    for (const split of ['train', 'val']) {
      const r = await runCli([
        'extract',
        '--data',
        path.join(dir, 'dogs'),
        '--labels',
        'labels.csv',
        '--val-fraction',
        '0.25',
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
    const reader = await FeatureCache.open(cache);
    const train = await reader.read('train');
    const val = await reader.read('val');
    assert.equal(val.count, 4);
    assert.equal(train.count, 12);
    assert.equal(new Set([...train.paths, ...val.paths]).size, 16);
    assert.deepEqual([...val.labels].sort(), [0, 0, 1, 1]);
    assert.deepEqual(reader.manifest.classes, ['collie', 'pug']);
    // Every row, whichever split it landed in, carries its CSV label: odd dogs are collies (0), even ones pugs (1).
    for (const set of [train, val]) {
      set.paths.forEach((p, k) => assert.equal(set.labels[k], Number(/dog(\d+)/.exec(p)![1]) % 2 ? 0 : 1, p));
    }
  });
});

describe('extract: locking', () => {
  it("refuses a second writer on the same split and shard, and takes over a dead one's lock", async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeImageFolder(path.join(dir, 'data'), { '.': { a: 2 } });
    const cache = path.join(dir, 'cache');
    const args = ['extract', '--data', path.join(dir, 'data'), '--model', model, '--cache', cache, '--device', 'cpu'];
    assert.equal((await runCli(args)).code, 0);
    const lock = path.join(cache, 'train', '.lock-0of1');
    await fs.writeFile(
      lock,
      JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), since: 'now' }),
    );
    const busy = await runCli(args);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /split train shard 0of1: another featcache process \(pid \d+/);
    await fs.writeFile(
      lock,
      JSON.stringify({ pid: 2 ** 22 + 7, host: (await import('node:os')).hostname(), since: 'then' }),
    );
    const resumed = await runCli(args);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.ok(!existsSync(lock), 'lock released');
  });
});

describe('extract: kill -9 anywhere, resume exactly once', () => {
  let dir: string;
  let model: string;
  let reference: Awaited<ReturnType<typeof snapshot>>;
  const images = 96;
  before(async () => {
    dir = await tempDir();
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    for (let i = 0; i < images; i++)
      await writeImage(path.join(dir, 'data', `c${i % 3}`, `${i}.jpg`), i, { width: 1400, height: 1000 });
    const r = await runCli([
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      path.join(dir, 'reference'),
      '--device',
      'cpu',
      '--batch-size',
      '4',
      '--part-rows',
      '8',
    ]);
    assert.equal(r.code, 0, r.stderr);
    reference = await snapshot(path.join(dir, 'reference'));
    assert.equal(reference.paths.length, images);
  });

  for (const killAfterParts of [0, 2, 7]) {
    it(`killed after ${killAfterParts} committed parts, the re-run completes with every image once`, async () => {
      const cache = path.join(dir, `cache-${killAfterParts}`);
      const args = [
        cliPath,
        'extract',
        '--data',
        path.join(dir, 'data'),
        '--model',
        model,
        '--cache',
        cache,
        '--device',
        'cpu',
        '--batch-size',
        '4',
        '--part-rows',
        '8',
      ];
      const child = spawn(process.execPath, args, { stdio: 'ignore' });
      const exited = new Promise((resolve) => child.on('exit', resolve));
      const splitDir = path.join(cache, 'train');
      const deadline = Date.now() + 60_000;
      for (;;) {
        const names = await fs.readdir(splitDir).catch(() => [] as string[]);
        const parts = names.filter((n) => n.startsWith('part-')).length;
        if (
          (killAfterParts === 0 ? names.some((n) => n.startsWith('.lock')) : parts >= killAfterParts) ||
          Date.now() > deadline
        )
          break;
        await new Promise((r) => setTimeout(r, 5));
      }
      child.kill('SIGKILL');
      await exited;
      const partial = await physicalRows(cache).catch(() => [] as string[]);
      assert.ok(partial.length < images, `killed before the end (${partial.length} rows)`);
      const r = await runCli(args.slice(1).concat(['--json']));
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).extracted, images - partial.length);
      const rows = await physicalRows(cache);
      assert.equal(rows.length, images, 'no image stored twice');
      assert.equal(new Set(rows).size, images);
      assert.deepEqual(await snapshot(cache), reference, 'features equal an uninterrupted run');
      assert.ok(!(await fs.readdir(splitDir)).some((n) => n.endsWith('.tmp')), 'no temporary files left');
    });
  }
});

describe('extract: Ctrl-C', () => {
  it('SIGINT commits what is done, exits 1 saying so, and the re-run finishes the rest', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    for (let i = 0; i < 120; i++)
      await writeImage(path.join(dir, 'data', `c${i % 2}`, `${i}.jpg`), i, { width: 1400, height: 1000 });
    const cache = path.join(dir, 'cache');
    const args = [
      cliPath,
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      cache,
      '--device',
      'cpu',
      '--batch-size',
      '2',
      '--part-rows',
      '1000',
    ];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    while (!existsSync(path.join(cache, 'train', '.lock-0of1'))) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGINT');
    assert.equal(await exited, 1);
    assert.match(stdout, /interrupted; re-run the same command to resume/);
    const committed = (await physicalRows(cache)).length;
    assert.ok(committed < 120, `${committed} rows committed on interrupt`);
    const r = await runCli(args.slice(1).concat(['--json']));
    assert.equal(JSON.parse(r.stdout).extracted, 120 - committed);
    const rows = await physicalRows(cache);
    assert.equal(rows.length, 120);
    assert.equal(new Set(rows).size, 120);
  });
});

describe('extract: two shards as two processes', () => {
  it('produce exactly the rows and features of one process', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeImageFolder(path.join(dir, 'data'), { train: { a: 7, b: 6 }, val: { a: 2, b: 2 } });
    const base = [
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--device',
      'cpu',
      '--batch-size',
      '2',
    ];
    assert.equal((await runCli([...base, '--cache', path.join(dir, 'one')])).code, 0);
    const shards = await Promise.all(
      ['0/2', '1/2'].map((s) => runCli([...base, '--cache', path.join(dir, 'two'), '--shard', s, '--json'])),
    );
    for (const s of shards) assert.equal(s.code, 0, s.stderr);
    const counts = shards.map((s) => JSON.parse(s.stdout).extracted as number);
    assert.ok(counts.every((c) => c > 0) && counts[0]! + counts[1]! === 13, `shard sizes ${String(counts)}`);
    assert.deepEqual(await snapshot(path.join(dir, 'two')), await snapshot(path.join(dir, 'one')));
  });
});

describe('extract: failure ledger over a hostile corpus', () => {
  let dir: string;
  let model: string;
  const expectFailed = ['empty.jpg', 'truncated.jpg', 'text.jpg', 'bomb.png'].map((n) => `photos/${n}`);
  before(async () => {
    dir = await tempDir();
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    const data = path.join(dir, 'data', 'photos');
    const raw = (w: number, h: number) => {
      const px = Buffer.alloc(w * h * 3);
      for (let i = 0; i < px.length; i++) px[i] = (i * 31) % 251;
      return sharp(px, { raw: { width: w, height: h, channels: 3 } });
    };
    await fs.mkdir(data, { recursive: true });
    const files: Record<string, Promise<Buffer>> = {
      'cmyk.jpg': raw(300, 200).toColourspace('cmyk').jpeg().toBuffer(),
      'deep16.png': raw(300, 200).toColourspace('rgb16').png().toBuffer(),
      'grey.png': raw(300, 200).greyscale().png().toBuffer(),
      'rgba.png': raw(300, 200).ensureAlpha(0.3).png().toBuffer(),
      'palette.gif': raw(300, 200).gif().toBuffer(),
      'animated.gif': sharp([await raw(120, 90).png().toBuffer(), await raw(120, 90).negate().png().toBuffer()], {
        join: { animated: true },
      })
        .gif()
        .toBuffer(),
      'photo.webp': raw(300, 200).webp().toBuffer(),
      'scan.tiff': raw(300, 200).tiff().toBuffer(),
      'rotated.jpg': raw(300, 200).jpeg().withMetadata({ orientation: 6 }).toBuffer(),
      'large photo.jpg': raw(6000, 4000).jpeg({ quality: 70 }).toBuffer(),
      'fourmi été ü.jpg': raw(200, 200).jpeg().toBuffer(),
      'empty.jpg': Promise.resolve(Buffer.alloc(0)),
      'text.jpg': Promise.resolve(Buffer.from('this is a text file with a .jpg name\n')),
      'bomb.png': Promise.resolve(pngBomb(50000, 50000)),
    };
    for (const [name, bytes] of Object.entries(files)) await fs.writeFile(path.join(data, name), await bytes);
    const good = await raw(400, 300).jpeg().toBuffer();
    await fs.writeFile(path.join(data, 'truncated.jpg'), good.subarray(0, Math.floor(good.length / 2)));
    await fs.symlink('..', path.join(data, 'loop'));
    await fs.writeFile(path.join(data, 'locked.jpg'), good);
    await fs.chmod(path.join(data, 'locked.jpg'), 0o000);
  });
  after(async () => {
    await fs.chmod(path.join(dir, 'data', 'photos', 'locked.jpg'), 0o644).catch(() => {});
  });

  it('records each unusable image with stage and message, extracts the rest, exits 3', async () => {
    const cache = path.join(dir, 'cache');
    const r = await runCli([
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      cache,
      '--device',
      'cpu',
      '--json',
    ]);
    assert.equal(r.code, 3, r.stderr);
    const result = JSON.parse(r.stdout);
    const runningAsRoot = process.getuid?.() === 0;
    const failedNames = result.failures.map((f: { path: string }) => f.path).sort();
    const expected = [...expectFailed, ...(runningAsRoot ? [] : ['photos/locked.jpg'])].sort();
    assert.deepEqual(failedNames, expected);
    const byName = Object.fromEntries(result.failures.map((f: { path: string }) => [f.path, f]));
    assert.equal(byName['photos/empty.jpg'].stage, 'read');
    assert.match(byName['photos/bomb.png'].message, /pixel limit/);
    assert.match(byName['photos/text.jpg'].message, /unsupported image format/);
    assert.equal(byName['photos/truncated.jpg'].stage, 'decode');
    assert.equal(result.failed, expected.length);
    const set = await (await FeatureCache.open(cache)).read('train');
    for (const name of [
      'fourmi été ü.jpg',
      'large photo.jpg',
      'animated.gif',
      'cmyk.jpg',
      'deep16.png',
      'rotated.jpg',
      'scan.tiff',
      'photo.webp',
    ]) {
      assert.ok(set.paths.includes(`photos/${name}`), name);
    }
    assert.equal(set.count, 16 - expected.length);
    assert.equal(new Set(set.paths).size, set.count, 'the symlink loop added no duplicates');
    const ledger = await (await FeatureCache.open(cache)).failures('train');
    assert.deepEqual(ledger.map((f) => f.path).sort(), expected);
    const again = await runCli([
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      cache,
      '--device',
      'cpu',
      '--json',
    ]);
    assert.equal(JSON.parse(again.stdout).extracted, 0, 'known failures are not retried without --retry-failed');
  });

  it('--strict stops at the first unusable image with a one-line error naming it', async () => {
    const r = await runCli([
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      path.join(dir, 'strict'),
      '--device',
      'cpu',
      '--strict',
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr.trim(),
      /^featcache: .*(empty|truncated|text|bomb)\.(jpg|png): (read|decode) failed \(.*\); --strict stops at the first unusable image$/,
    );
  });
});

describe('extract: disk full', () => {
  const mountPoint = path.join('/tmp', `featcache-full-${process.pid}`);
  let mounted = false;
  before(async () => {
    await fs.mkdir(mountPoint, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountPoint], { stdio: 'ignore' });
      mounted = true;
    } catch {
      mounted = false;
    }
  });
  after(() => {
    if (mounted) execFileSync('umount', [mountPoint]);
  });

  it('fails with one line, keeps committed parts readable, and leaves no temporary file', async (t) => {
    if (!mounted)
      return t.skip('cannot mount a 1 MiB tmpfs here (needs root); the failing-writer unit test covers the logic');
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeImageFolder(path.join(dir, 'data'), { '.': { a: 4 } });
    const cache = path.join(mountPoint, 'cache');
    // Tapping the un-pooled activation makes each row 150,528 floats (588 KiB): the second part cannot fit.
    const r = await runCli([
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      cache,
      '--device',
      'cpu',
      '--tap',
      '/features/Relu',
      '--part-rows',
      '1',
      '--batch-size',
      '1',
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr.trim(),
      /^featcache: --cache .*: cannot write .*part-.*\.arrow \(ENOSPC\); parts already written are intact/,
    );
    const reader = await FeatureCache.open(cache);
    const set = await reader.read('train');
    assert.equal(set.count, 1);
    assert.equal(set.dim, 3 * 224 * 224);
    assert.ok(!(await fs.readdir(path.join(cache, 'train'))).some((n) => n.endsWith('.tmp')));
  });
});

describe('extract: hymenoptera with the real MobileNetV2', () => {
  it(
    'reads the progressive JPEG with a space and the GIF placeholder',
    { skip: needsShared(hymenoptera, mobilenetModel) },
    async () => {
      const dir = await tempDir();
      const r = await runCli([
        'extract',
        '--data',
        hymenoptera,
        '--split',
        'val',
        '--model',
        path.join(sharedDir, 'models/mobilenetv2-12-int8.onnx'),
        '--cache',
        path.join(dir, 'c'),
        '--device',
        'cpu',
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout);
      assert.equal(result.extracted, 153);
      assert.equal(result.dim, 1280);
    },
  );
});
