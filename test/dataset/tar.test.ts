import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import sharp from 'sharp';
import { type Item, openDataset } from '../../src/dataset/index.js';
import type { ImageSource, Stamp } from '../../src/dataset/source.js';
import { type ExtractOptions, extract } from '../../src/jobs/extract.js';
import { ExitCode } from '../../src/errors.js';
import { FeatureCache } from '../../src/store/reader.js';
import { inShard } from '../../src/dataset/split.js';
import {
  classesOf,
  expandShards,
  isTarPattern,
  listTar,
  openTarDataset,
  patternRoot,
  splitMemberName,
} from '../../src/dataset/tar.js';
import { MEMBER_MTIME, type Sample, writeShard } from '../support/webdataset.js';
import { tempDir, writeTinyModel } from '../support/helpers.js';

async function jpeg(seed: number): Promise<Buffer> {
  const data = Buffer.alloc(32 * 24 * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * (seed + 5) + seed * 17) % 256;
  return sharp(data, { raw: { width: 32, height: 24, channels: 3 } })
    .jpeg()
    .toBuffer();
}

type Outcome = { item: Item; bytes: Buffer; stamp: Stamp } | { item: Item; failure: string };

/** Reads items four at a time, as extract's batches do; failures keep their message. */
async function readAll(source: ImageSource, items: Item[]): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (let i = 0; i < items.length; i += 4) {
    out.push(
      ...(await Promise.all(
        items.slice(i, i + 4).map((item) =>
          source.read(item).then(
            (r): Outcome => ({ item, ...r }),
            (error: Error): Outcome => ({ item, failure: error.message }),
          ),
        ),
      )),
    );
  }
  return out;
}

describe('WebDataset tar shards', () => {
  let dir: string;
  const images = new Map<string, Buffer>();
  /** 3 shards × 4 samples, labels 0..2 in .cls; shard 2 also has a .json-only label sample and a caption-only sample. */
  before(async () => {
    dir = await tempDir();
    for (let s = 0; s < 3; s++) {
      const samples: Sample[] = [];
      for (let k = 0; k < 4; k++) {
        const key = `s${s}/${String(s * 4 + k).padStart(6, '0')}`;
        const image = await jpeg(s * 4 + k);
        images.set(`train-${String(s).padStart(6, '0')}.tar#${key}`, image);
        samples.push({ key, members: { jpg: image, cls: `${(s + k) % 3}\n`, txt: 'a caption' } });
      }
      if (s === 2) samples.push({ key: 'captiononly', members: { txt: 'no image here' } });
      await writeShard(path.join(dir, 'shards', `train-${String(s).padStart(6, '0')}.tar`), samples);
    }
  });

  it('splits member names as webdataset does', () => {
    assert.deepEqual(splitMemberName('a/b/0001.seg.png'), { key: 'a/b/0001', ext: 'seg.png' });
    assert.deepEqual(splitMemberName('x.JPG'), { key: 'x', ext: 'jpg' });
    assert.equal(splitMemberName('noext'), null);
  });

  it('recognises shard patterns and their root folder', () => {
    assert.ok(isTarPattern('shards/train-{000000..000099}.tar'));
    assert.ok(isTarPattern('s/*.tar.gz'));
    assert.ok(!isTarPattern('images/'));
    assert.equal(patternRoot('/data/shards/train-{000000..000009}.tar'), '/data/shards');
    assert.equal(patternRoot('/data/*/x.tar'), '/data');
  });

  it('expands brace ranges in order and globs sorted, and refuses missing shards', async () => {
    const shards = path.join(dir, 'shards');
    assert.deepEqual(
      (await expandShards(`${shards}/train-{000000..000002}.tar`)).map((f) => path.basename(f)),
      ['train-000000.tar', 'train-000001.tar', 'train-000002.tar'],
    );
    assert.deepEqual((await expandShards(`${shards}/train-*.tar`)).length, 3);
    await assert.rejects(
      expandShards(`${shards}/train-{000000..000004}.tar`),
      /2 of 5 shard names match no tar file \(e\.g\. .*train-000003\.tar/,
    );
  });

  it('lists samples by key with labels, and rows read back byte for byte', async () => {
    const ds = await openTarDataset(path.join(dir, 'shards', 'train-{000000..000002}.tar'));
    assert.equal(ds.root, path.join(dir, 'shards'));
    assert.deepEqual(ds.classes, ['0', '1', '2']);
    assert.equal(ds.items.length, 12);
    assert.deepEqual(ds.items.slice(0, 2), [
      { path: 'train-000000.tar#s0/000000', label: 0 },
      { path: 'train-000000.tar#s0/000001', label: 1 },
    ]);
    assert.deepEqual(ds.skipped, [{ path: 'train-000002.tar#captiononly', reason: 'no image member in the sample' }]);
    const out = await readAll(ds.source, ds.items);
    assert.equal(out.length, 12);
    for (const o of out) {
      assert.ok('bytes' in o, JSON.stringify(o));
      assert.ok(o.bytes.equals(images.get(o.item.path)!), o.item.path);
      assert.deepEqual(o.stamp, { size: images.get(o.item.path)!.length, mtimeMs: MEMBER_MTIME.getTime() });
      assert.deepEqual(await ds.source.stamp(o.item), o.stamp);
      assert.equal(ds.source.locate(o.item), path.join(dir, 'shards', o.item.path));
    }
    assert.equal(await ds.source.stamp({ path: 'train-000000.tar#nope', label: null }), null);
    await ds.source.close?.();
  });

  it('reads only the samples asked for', async () => {
    const ds = await openTarDataset(path.join(dir, 'shards', '*.tar'));
    const wanted = [ds.items[9]!, ds.items[2]!];
    const out = await readAll(ds.source, wanted);
    for (const o of out) assert.ok('bytes' in o && o.bytes.equals(images.get(o.item.path)!));
    await ds.source.close?.();
  });

  it('splits --shard K/N by tar file: disjoint, complete, whole shards', async () => {
    const pattern = path.join(dir, 'shards', 'train-{000000..000002}.tar');
    const all = await openTarDataset(pattern);
    const seen = new Map<string, number>();
    for (let index = 0; index < 2; index++) {
      const part = await openTarDataset(pattern, { index, count: 2 });
      for (const item of part.items) {
        assert.ok(!seen.has(item.path), `${item.path} in two shards`);
        seen.set(item.path, index);
        assert.ok(inShard({ index, count: 2 }, item.path));
      }
    }
    assert.equal(seen.size, all.items.length);
    const tarOf = (p: string) => p.split('#')[0]!;
    for (const [p, index] of seen) for (const [q, other] of seen) if (tarOf(p) === tarOf(q)) assert.equal(index, other);
  });

  it('reads gzipped shards and labels from .json', async () => {
    const file = path.join(dir, 'gz', 'part-0.tar.gz');
    const a = await jpeg(100);
    const b = await jpeg(101);
    await writeShard(
      file,
      [
        { key: 'a', members: { jpg: a, json: JSON.stringify({ label: 'cat', width: 32 }) } },
        {
          key: 'b',
          members: {
            'seg.png': await sharp(a).png().toBuffer(),
            png: await sharp(b).png().toBuffer(),
            json: '{"class": "dog"}',
          },
        },
      ],
      { gzip: true },
    );
    const ds = await openTarDataset(file);
    assert.deepEqual(ds.classes, ['cat', 'dog']);
    assert.deepEqual(ds.items, [
      { path: 'part-0.tar.gz#a', label: 0 },
      { path: 'part-0.tar.gz#b', label: 1 },
    ]);
    // b before a, one at a time: the gzip cursor must restart for a member it has already passed.
    const second0 = await readAll(ds.source, [ds.items[1]!]);
    const first0 = await readAll(ds.source, [ds.items[0]!]);
    const out = [...first0, ...second0];
    assert.ok('bytes' in out[0]! && out[0].bytes.equals(a));
    const second = out[1]!;
    assert.ok('bytes' in second);
    assert.deepEqual(
      await sharp(second.bytes).raw().toBuffer(),
      await sharp(b).raw().toBuffer(),
      'b.png, not b.seg.png',
    );
    await ds.source.close?.();
  });

  it('a truncated shard fails its remaining samples and the next shard is still read', async () => {
    const broken = path.join(dir, 'broken');
    const samples: Sample[] = [];
    for (let k = 0; k < 6; k++)
      samples.push({ key: `k${k}`, members: { jpg: await jpeg(200 + k), cls: String(k % 2) } });
    await writeShard(path.join(broken, 'a.tar'), samples);
    await writeShard(path.join(broken, 'b.tar'), samples.slice(0, 2));
    const whole = await fs.readFile(path.join(broken, 'a.tar'));
    const good = await openTarDataset(path.join(broken, '{a,b}.tar'));
    assert.equal(good.items.length, 8);
    // Cut a.tar in the middle of the 4th image's body: k0..k2 are intact.
    const offset = whole.indexOf(samples[3]!.members.jpg as Buffer);
    await fs.writeFile(path.join(broken, 'a.tar'), whole.subarray(0, offset + 100));
    const logged: string[] = [];
    const ds = await openTarDataset(path.join(broken, '{a,b}.tar'), undefined, (l) => logged.push(l));
    assert.match(logged.join('\n'), /a\.tar: .*; its 4 readable samples are used/);
    assert.ok(ds.skipped.some((s) => s.path === 'a.tar' && /corrupt or truncated tar after 4 samples/.test(s.reason)));
    // The damaged shard itself is an item that fails, so the damage reaches the failure ledger.
    const listed = await readAll(ds.source, ds.items);
    assert.deepEqual(
      listed
        .filter((o) => 'failure' in o)
        .map((o) => o.item.path)
        .sort(),
      ['a.tar#', 'a.tar#k3'],
    );
    // The listing made before the damage asks for all six: k3..k5 fail, b.tar is read in full.
    const out = await readAll(good.source, good.items);
    assert.equal(out.length, 8);
    const failed = out
      .filter((o) => 'failure' in o)
      .map((o) => o.item.path)
      .sort();
    assert.deepEqual(failed, ['a.tar#k3', 'a.tar#k4', 'a.tar#k5']);
    for (const o of out) if ('failure' in o) assert.match(o.failure, /corrupt or truncated tar/);
    assert.equal(out.filter((o) => 'bytes' in o && o.item.path.startsWith('b.tar#')).length, 2);
    await ds.source.close?.();
    await good.source.close?.();
  });

  it('a file that is not a tar lists nothing and says why', async () => {
    const file = path.join(dir, 'junk', 'x.tar');
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, Buffer.alloc(2048, 0x41));
    const listing = await listTar(file, 'x.tar');
    assert.equal(listing.samples.length, 0);
    assert.ok(listing.error, 'an error is reported');
  });

  it('openDataset detects a shard pattern, splits by tar file and carves --val-fraction', async () => {
    const pattern = path.join(dir, 'shards', 'train-{000000..000002}.tar');
    const ds = await openDataset({ data: pattern, split: 'train', seed: 0 });
    assert.equal(ds.layout, 'webdataset');
    assert.equal(ds.items.length, 12);
    let total = 0;
    for (let index = 0; index < 3; index++) {
      const shard = await openDataset({ data: pattern, split: 'train', seed: 0, shard: { index, count: 3 } });
      for (const item of shard.items) assert.ok(inShard({ index, count: 3 }, item.path));
      total += shard.items.length;
    }
    assert.equal(total, 12);
    const train = await openDataset({ data: pattern, split: 'train', seed: 0, valFraction: 0.25 });
    const val = await openDataset({ data: pattern, split: 'val', seed: 0, valFraction: 0.25 });
    assert.equal(val.items.length, 3);
    assert.equal(train.items.length + val.items.length, 12);
    await assert.rejects(
      openDataset({ data: path.join(dir, 'shards', 'nope-{0..1}.tar'), split: 'train', seed: 0 }),
      /2 of 2 shard names match no tar file/,
    );
  });

  it('says when a key repeats inside one shard instead of dropping the repeat silently', async () => {
    const file = path.join(dir, 'dup', 'dup-0.tar');
    const first = await jpeg(500);
    await writeShard(file, [
      { key: 'k0', members: { jpg: first, cls: '0' } },
      { key: 'k1', members: { jpg: await jpeg(501), cls: '1' } },
      { key: 'k0', members: { jpg: await jpeg(502), cls: '1' } },
    ]);
    const listing = await listTar(file, 'dup-0.tar');
    assert.deepEqual(
      listing.samples.map((s) => [s.key, s.label]),
      [
        ['k0', 0],
        ['k1', 1],
      ],
    );
    assert.deepEqual(
      listing.skipped.map((s) => s.path),
      ['dup-0.tar#k0'],
    );
    assert.match(listing.skipped[0]!.reason, /duplicate key in the shard/);
  });

  it('indexes integer labels as themselves and names in sorted order', () => {
    const ints = classesOf([2, 0, null, 4]);
    assert.deepEqual(ints.classes, ['0', '1', '2', '3', '4']);
    assert.equal(ints.index(4), 4);
    const names = classesOf(['dog', 'cat', 3]);
    assert.deepEqual(names.classes, ['3', 'cat', 'dog']);
    assert.equal(names.index('dog'), 2);
    assert.equal(names.index(null), null);
  });
});

describe('extract from WebDataset shards', () => {
  let dir: string;
  let model: string;
  const options = (
    data: string,
    cache: string,
    extra: Partial<ExtractOptions> = {},
  ): Partial<ExtractOptions> & { data: string } => ({
    data,
    model,
    cache,
    device: 'cpu',
    threads: 1,
    batchSize: 4,
    partRows: 4,
    ...extra,
  });
  /** shard s holds keys s*5..s*5+4; the same images are written to folder/<cls>/<key>.jpg as the reference. */
  before(async () => {
    dir = await tempDir();
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    for (let s = 0; s < 3; s++) {
      const samples: Sample[] = [];
      for (let k = s * 5; k < s * 5 + 5; k++) {
        const image = await jpeg(300 + k);
        samples.push({ key: `${String(k).padStart(4, '0')}`, members: { jpg: image, cls: String(k % 2) } });
        await fs.mkdir(path.join(dir, 'folder', String(k % 2)), { recursive: true });
        await fs.writeFile(path.join(dir, 'folder', String(k % 2), `${String(k).padStart(4, '0')}.jpg`), image);
      }
      await writeShard(path.join(dir, 'shards', `part-${s}.tar`), samples);
    }
  });

  it('caches every sample under shard#key with its .cls label and the features of the same images on disk; re-runs skip them', async () => {
    const cache = path.join(dir, 'cache');
    const first = await extract(options(path.join(dir, 'shards', 'part-{0..1}.tar'), cache));
    assert.deepEqual([first.extracted, first.failed], [10, 0]);
    const second = await extract(options(path.join(dir, 'shards', 'part-{0..2}.tar'), cache));
    assert.deepEqual([second.extracted, second.unchanged], [5, 10], 'only the new shard is extracted');
    const reference = await extract(options(path.join(dir, 'folder'), path.join(dir, 'reference')));
    assert.equal(reference.extracted, 15);
    const got = await (await FeatureCache.open(cache)).read('train');
    const want = await (await FeatureCache.open(path.join(dir, 'reference'))).read('train');
    assert.deepEqual(got.classes, ['0', '1']);
    assert.equal(got.count, 15);
    for (let i = 0; i < got.count; i++) {
      const [shard, key] = got.paths[i]!.split('#') as [string, string];
      assert.equal(shard, `part-${Math.floor(Number(key) / 5)}.tar`);
      const j = want.paths.indexOf(`${Number(key) % 2}/${key}.jpg`);
      assert.equal(got.labels[i], want.labels[j]);
      assert.deepEqual(
        got.features.subarray(i * got.dim, (i + 1) * got.dim),
        want.features.subarray(j * want.dim, (j + 1) * want.dim),
      );
    }
  });

  it('shards are cached under the split they are given (val-*.tar as --split val), like a list', async () => {
    const shards = path.join(dir, 'valshards');
    await fs.mkdir(shards);
    for (const s of [0, 1])
      await fs.copyFile(path.join(dir, 'shards', `part-${s}.tar`), path.join(shards, `val-00000${s}.tar`));
    const cache = path.join(dir, 'cache-val');
    const r = await extract(options(path.join(shards, 'val-{000000..000001}.tar'), cache, { split: 'val' }));
    assert.deepEqual([r.extracted, r.failed, r.exitCode], [10, 0, ExitCode.ok]);
    const store = await FeatureCache.open(cache);
    const val = await store.read('val');
    assert.equal(val.count, 10);
    assert.deepEqual([...new Set(val.paths.map((p) => p.split('#')[0]))].sort(), ['val-000000.tar', 'val-000001.tar']);
    await assert.rejects(store.read('train'));
  });

  it('a truncated shard puts its unreadable samples in the ledger and the other shards are extracted', async () => {
    const shards = path.join(dir, 'damaged');
    await fs.mkdir(shards);
    for (const s of [0, 1])
      await fs.copyFile(path.join(dir, 'shards', `part-${s}.tar`), path.join(shards, `part-${s}.tar`));
    const whole = await fs.readFile(path.join(shards, 'part-0.tar'));
    // Cut inside the third sample's image.
    const third = await jpeg(302);
    await fs.writeFile(path.join(shards, 'part-0.tar'), whole.subarray(0, whole.indexOf(third) + 50));
    const cache = path.join(dir, 'cache-damaged');
    const logged: string[] = [];
    const r = await extract(options(path.join(shards, 'part-*.tar'), cache, { log: (l) => logged.push(l) }));
    assert.deepEqual([r.extracted, r.failed, r.exitCode], [7, 2, ExitCode.partial]);
    assert.ok(r.skipped.some((s) => s.path === 'part-0.tar' && /corrupt or truncated/.test(s.reason)));
    assert.match(logged.join('\n'), /part-0\.tar: .*readable samples are used/);
    const ledger = await (await FeatureCache.open(cache)).failures('train');
    assert.deepEqual(
      ledger.map((f) => f.path),
      ['part-0.tar#', 'part-0.tar#0002'],
    );
    for (const f of ledger) assert.match(f.message, /corrupt or truncated tar/);
    assert.match(ledger[0]!.message, /after 3 samples .*later samples were not read/);
  });

  it("a non-integer .cls (-1, 1.5, abc) is that sample's failure; the other .cls stay class indices", async () => {
    const shards = path.join(dir, 'badcls');
    const labels = ['0', '1', '-1', '1.5', 'abc', '1', '0'];
    const samples: Sample[] = [];
    for (const [k, cls] of labels.entries()) samples.push({ key: `b${k}`, members: { jpg: await jpeg(400 + k), cls } });
    await writeShard(path.join(shards, 'bad-0.tar'), samples);
    const ds = await openTarDataset(path.join(shards, 'bad-0.tar'));
    assert.deepEqual(ds.classes, ['0', '1'], 'the good .cls values are indices, not names');
    assert.deepEqual(
      ds.items.map((i) => i.label),
      [0, 1, null, null, null, 1, 0],
    );
    const cache = path.join(dir, 'cache-badcls');
    const r = await extract(options(path.join(shards, 'bad-0.tar'), cache));
    assert.deepEqual([r.extracted, r.failed, r.exitCode], [4, 3, ExitCode.partial]);
    const store = await FeatureCache.open(cache);
    const got = await store.read('train');
    assert.deepEqual(got.classes, ['0', '1']);
    const labelOf = new Map(got.paths.map((p, i) => [p, got.labels[i]]));
    assert.deepEqual(
      ['b0', 'b1', 'b5', 'b6'].map((k) => labelOf.get(`bad-0.tar#${k}`)),
      [0, 1, 1, 0],
    );
    const ledger = await store.failures('train');
    assert.deepEqual(ledger.map((f) => f.path).sort(), ['bad-0.tar#b2', 'bad-0.tar#b3', 'bad-0.tar#b4']);
    for (const f of ledger) assert.match(f.message, /bad \.cls label .*expected a non-negative integer class index/);
  });
});
