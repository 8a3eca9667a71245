import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { openDataset } from '../../src/dataset/index.js';
import { FeatcacheError } from '../../src/errors.js';
import { hymenoptera, needsShared, tempDir, writeImage, writeImageFolder } from '../support/helpers.js';

const base = { seed: 0 };

describe('ImageFolder with split folders', () => {
  it('labels by sorted class folder, stable across splits, ignoring non-images', async () => {
    const root = await tempDir();
    await writeImageFolder(root, { train: { zebra: 2, ant: 3 }, val: { zebra: 1, ant: 1, mole: 1 } });
    await fs.writeFile(path.join(root, 'train/ant/notes.txt'), 'not an image');
    const train = await openDataset({ ...base, data: root, split: 'train' });
    assert.equal(train.layout, 'imagefolder-splits');
    assert.deepEqual(train.classes, ['ant', 'mole', 'zebra']);
    assert.equal(train.items.length, 5);
    assert.deepEqual(train.items[0], { path: 'train/ant/img0.jpg', label: 0 });
    assert.equal(train.items.at(-1)!.label, 2);
    assert.deepEqual(train.skipped, [{ path: 'ant/notes.txt', reason: 'not an image file extension' }]);
    const val = await openDataset({ ...base, data: root, split: 'val' });
    assert.deepEqual(val.classes, train.classes);
    await assert.rejects(
      openDataset({ ...base, data: root, split: 'test' }),
      /^FeatcacheError: split: expected one of the split folders of .* \(train, val\), got "test"/,
    );
  });

  it('survives a symlink loop and lists each real file once', async () => {
    const root = await tempDir();
    await writeImageFolder(root, { train: { a: 2 } });
    await fs.symlink('..', path.join(root, 'train/a/loop'));
    await fs.symlink('/nonexistent/dir', path.join(root, 'train/a/dangling.jpg'));
    const ds = await openDataset({ ...base, data: root, split: 'train' });
    assert.deepEqual(
      ds.items.map((i) => i.path),
      ['train/a/img0.jpg', 'train/a/img1.jpg'],
    );
    assert.ok(ds.skipped.some((s) => s.path.endsWith('dangling.jpg')));
  });

  it('hymenoptera: 245 train and 153 val images in two classes', { skip: needsShared(hymenoptera) }, async () => {
    const train = await openDataset({ ...base, data: hymenoptera, split: 'train' });
    const val = await openDataset({ ...base, data: hymenoptera, split: 'val' });
    assert.deepEqual(train.classes, ['ants', 'bees']);
    assert.equal(train.items.length, 245);
    assert.equal(val.items.length, 153);
    assert.ok(train.items.some((i) => i.path === 'train/ants/ant photos.jpg'));
  });
});

describe('ImageFolder without split folders', () => {
  it('splits stratified and seeded with --val-fraction; train and val are disjoint and complete', async () => {
    const root = await tempDir();
    await writeImageFolder(root, { '.': { cats: 20, dogs: 10 } });
    const options = { data: root, valFraction: 0.1, seed: 0 };
    const train = await openDataset({ ...options, split: 'train' });
    const val = await openDataset({ ...options, split: 'val' });
    assert.equal(train.layout, 'imagefolder');
    assert.equal(val.items.length, 3);
    assert.deepEqual(val.items.map((i) => i.label).sort(), [0, 0, 1], 'each class keeps its share');
    const trainPaths = new Set(train.items.map((i) => i.path));
    assert.equal(train.items.length + val.items.length, 30, 'every image in exactly one split');
    assert.deepEqual(
      val.items.filter((i) => trainPaths.has(i.path)),
      [],
      'no image in both splits',
    );
    assert.equal(
      new Set([...trainPaths, ...val.items.map((i) => i.path)]).size,
      30,
      'together they are the whole folder',
    );
    const again = await openDataset({ ...options, split: 'val' });
    assert.deepEqual(again.items, val.items, 'same seed, same split');
    const other = await openDataset({ ...options, seed: 7, split: 'val' });
    assert.notDeepEqual(other.items, val.items, 'another seed, another split');
    await assert.rejects(openDataset({ data: root, seed: 0, split: 'val' }), /pass valFraction/);
    await assert.rejects(
      openDataset({ data: root, seed: 0, split: 'train', valFraction: 1.5 }),
      /valFraction: expected between 0 and 1/,
    );
  });
});

describe('CSV of id,label (Kaggle dog breeds)', () => {
  async function kaggle(csv: string, ids = ['a1', 'b2', 'c3', 'd4']) {
    const root = await tempDir();
    for (const [i, id] of ids.entries()) await writeImage(path.join(root, 'train', `${id}.jpg`), i);
    await fs.writeFile(path.join(root, 'labels.csv'), csv);
    return root;
  }

  it('reads id,breed rows, finds <id>.jpg and splits stratified', async () => {
    const root = await kaggle('id,breed\na1,pug\nb2,collie\nc3,pug\nd4,collie\n');
    const train = await openDataset({
      data: root,
      labels: path.join(root, 'labels.csv'),
      split: 'train',
      valFraction: 0.5,
      seed: 0,
    });
    assert.equal(train.layout, 'csv');
    assert.deepEqual(train.classes, ['collie', 'pug']);
    assert.equal(train.items.length, 2);
    assert.deepEqual(train.items.map((i) => i.label).sort(), [0, 1]);
    assert.ok(train.items.every((i) => i.path.startsWith('train/')));
  });

  it('a CSV without --val-fraction is cached whole under any split it is given', async () => {
    const root = await kaggle('id,breed\na1,pug\nb2,collie\nc3,pug\nd4,collie\n');
    for (const split of ['val', 'holdout']) {
      const ds = await openDataset({ data: root, labels: path.join(root, 'labels.csv'), split, seed: 0 });
      assert.equal(ds.split, split);
      assert.deepEqual(ds.items.map((i) => path.basename(i.path)).sort(), ['a1.jpg', 'b2.jpg', 'c3.jpg', 'd4.jpg']);
    }
  });

  it('refuses a class name with a line break, which would shift classes.txt', async () => {
    const root = await kaggle('id,breed\na1,"pug\ncollie"\nb2,collie\nc3,pug\nd4,collie\n');
    await assert.rejects(
      openDataset({ data: root, labels: path.join(root, 'labels.csv'), split: 'train', seed: 0 }),
      (error: FeatcacheError) =>
        error.exitCode === 2 && /labels\.csv: class name "pug\\ncollie" contains a line break/.test(error.message),
    );
  });

  it('finds labels.csv inside --data when it is not found as given', async () => {
    const root = await kaggle('id,breed\na1,pug\nb2,collie\nc3,pug\nd4,collie\n');
    const val = await openDataset({ data: root, labels: 'labels.csv', split: 'val', valFraction: 0.5, seed: 0 });
    assert.equal(val.items.length, 2);
  });

  it('refuses missing columns, duplicate ids, unknown ids and ids escaping the image folder', async () => {
    const cases: [string, RegExp][] = [
      ['name,breed\na1,pug\n', /expected a header with an id column .* got: name,breed/],
      ['id,breed\na1,pug\na1,collie\n', /duplicate ids \(1\): a1/],
      ['id,breed\na1,pug\nzz9,collie\n', /1 ids have no image .* \(e\.g\. zz9\)/],
      ['id,breed\n../../etc/passwd,pug\n', /points outside the image directory/],
    ];
    for (const [csv, pattern] of cases) {
      const root = await kaggle(csv);
      await assert.rejects(
        openDataset({ data: root, labels: path.join(root, 'labels.csv'), split: 'train', seed: 0 }),
        (e: FeatcacheError) => {
          assert.match(e.message, pattern);
          assert.ok(e.message.startsWith('labels '), e.message);
          return true;
        },
      );
    }
  });
});

describe('unlabelled images', () => {
  it('a folder of images and a .txt list give unlabelled items', async () => {
    const root = await tempDir();
    await writeImage(path.join(root, 'x.jpg'), 1);
    await writeImage(path.join(root, 'y z ü.png'), 2, { format: 'png' });
    const folder = await openDataset({ data: root, split: 'train', seed: 0 });
    assert.equal(folder.layout, 'list');
    assert.deepEqual(folder.items, [
      { path: 'x.jpg', label: null },
      { path: 'y z ü.png', label: null },
    ]);
    await fs.writeFile(path.join(root, 'list.txt'), 'x.jpg\n# comment\ny z ü.png\n');
    const list = await openDataset({ data: path.join(root, 'list.txt'), split: 'train', seed: 0 });
    assert.deepEqual(
      list.items.map((i) => i.path),
      ['x.jpg', 'y z ü.png'],
    );
  });

  it('shards partition the items disjointly and completely', async () => {
    const root = await tempDir();
    for (let i = 0; i < 40; i++) await fs.writeFile(path.join(root, `${i}.jpg`), '');
    const parts = await Promise.all(
      [0, 1, 2].map((index) => openDataset({ data: root, split: 'train', seed: 0, shard: { index, count: 3 } })),
    );
    const all = parts.flatMap((p) => p.items.map((i) => i.path));
    assert.equal(all.length, 40);
    assert.equal(new Set(all).size, 40);
    assert.ok(
      parts.every((p) => p.items.length > 5),
      'shards are balanced enough',
    );
  });
});

describe('bad --data', () => {
  it('names the path', async () => {
    await assert.rejects(
      openDataset({ data: '/no/such/dir', split: 'train', seed: 0 }),
      /^FeatcacheError: data \/no\/such\/dir: no such file or directory/,
    );
  });
});
