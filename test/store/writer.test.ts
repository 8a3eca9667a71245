import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import type { Item } from '../../src/dataset/index.js';
import type { Stamp } from '../../src/dataset/source.js';
import { inShard } from '../../src/dataset/split.js';
import { type CacheManifest, ensureManifest } from '../../src/store/manifest.js';
import { type Failure, type Row, readPart } from '../../src/store/part.js';
import { FeatureCache } from '../../src/store/reader.js';
import { MAX_PART_BYTES, SplitWriter, shardLabel } from '../../src/store/writer.js';
import { tempDir } from '../support/helpers.js';

const DIM = 2;

const manifest = (): CacheManifest => ({
  format: 1,
  modelFile: 'm.onnx',
  modelSha256: 'aaa',
  tappedTensor: 'pool',
  tap: {},
  preset: { name: 'torchvision' },
  exif: 'ignore',
  icc: 'ignore',
  dim: DIM,
  classes: ['ants'],
  createdAt: 'now',
  versions: {},
});

const row = (p: string, size: number, mtimeMs: number): Row => ({
  path: p,
  label: 0,
  labelName: 'ants',
  size,
  mtimeMs,
});
const failure = (p: string, size: number, mtimeMs: number): Failure => ({
  path: p,
  stage: 'decode',
  message: 'bad',
  size,
  mtimeMs,
});
const item = (p: string): Item => ({ path: p, label: 0 });

async function newCache(): Promise<string> {
  const cache = await tempDir();
  await ensureManifest(cache, manifest());
  return cache;
}

async function open(
  cache: string,
  over: { partRows?: number; dim?: number; shard?: { index: number; count: number } } = {},
): Promise<SplitWriter> {
  return SplitWriter.open({
    cache,
    split: 'train',
    dim: over.dim ?? DIM,
    partRows: over.partRows ?? 100,
    provenance: {},
    shard: over.shard,
  });
}

/** One committed run: rows (features [k, k] for the k-th row) and failures. */
async function commit(cache: string, rows: Row[], failures: Failure[] = [], removed: string[] = []): Promise<void> {
  const writer = await open(cache);
  await writer.add(rows, Float32Array.from(rows.flatMap((_, k) => [k, k])), failures);
  await writer.finish(removed);
  await writer.close();
}

/** Plans `paths` against stamps looked up by path; records which paths were stat'ed. */
async function plan(
  cache: string,
  paths: string[],
  stamps: Record<string, Stamp | null>,
  retryFailed = false,
  shard?: { index: number; count: number },
) {
  const writer = await open(cache, { shard });
  const asked: string[] = [];
  try {
    const result = await writer.plan(
      paths.map(item),
      async (i) => (asked.push(i.path), stamps[i.path] ?? null),
      retryFailed,
    );
    return { todo: result.todo.map((i) => i.path), unchanged: result.unchanged, removed: result.removed.sort(), asked };
  } finally {
    await writer.close();
  }
}

describe('SplitWriter.plan (incremental extraction)', () => {
  it('keeps a cached row only when both size and mtime match; new, resized, touched and unseen items are redone', async () => {
    const cache = await newCache();
    await commit(
      cache,
      ['same', 'resized', 'touched', 'unseen', 'gone'].map((p) => row(p, 10, 1000.5)),
    );
    const result = await plan(cache, ['same', 'resized', 'touched', 'unseen', 'new'], {
      same: { size: 10, mtimeMs: 1000.5 },
      resized: { size: 11, mtimeMs: 1000.5 },
      touched: { size: 10, mtimeMs: 1000.75 },
      unseen: null,
      new: { size: 10, mtimeMs: 1000.5 },
    });
    assert.deepEqual(result.todo, ['resized', 'touched', 'unseen', 'new']);
    assert.equal(result.unchanged, 1);
    assert.deepEqual(result.removed, ['gone']);
    assert.deepEqual(result.asked.sort(), ['resized', 'same', 'touched', 'unseen'], "only cached items are stat'ed");
  });

  it('compares against the newest record: a re-extracted row, a removal, a failure', async () => {
    const cache = await newCache();
    await commit(cache, [row('a', 10, 1), row('b', 10, 1), row('c', 10, 1)]);
    await commit(cache, [row('a', 20, 2)], [failure('b', 30, 3)], ['c']);
    const stamps = { a: { size: 20, mtimeMs: 2 }, b: { size: 30, mtimeMs: 3 }, c: { size: 10, mtimeMs: 1 } };
    const plain = await plan(cache, ['a', 'b', 'c'], stamps);
    assert.deepEqual(plain.todo, ['c'], 'a removed path that comes back is extracted again');
    assert.equal(plain.unchanged, 2, 'a known failure at the same stamp is not retried');
    assert.deepEqual(plain.removed, [], 'nothing live is missing');
    const retry = await plan(cache, ['a', 'b', 'c'], stamps, true);
    assert.deepEqual(retry.todo, ['b', 'c']);
    // Even an (empty, epoch-dated) file whose stamp equals the removal marker's is extracted again.
    assert.deepEqual((await plan(cache, ['c'], { c: { size: 0, mtimeMs: 0 } })).todo, ['c']);
    const stale = await plan(cache, ['a', 'b'], { a: { size: 10, mtimeMs: 1 }, b: { size: 30, mtimeMs: 4 } });
    assert.deepEqual(
      stale.todo,
      ['a', 'b'],
      'the old stamp of a re-extracted row no longer counts; a failure is retried when its file changes',
    );
    assert.deepEqual(stale.removed, [], 'an already removed path is not removed again');
  });

  it('a shard only removes paths that belong to it', async () => {
    const cache = await newCache();
    const paths = [...Array(12).keys()].map((k) => `img${k}.jpg`);
    await commit(
      cache,
      paths.map((p) => row(p, 1, 1)),
    );
    const shard = { index: 1, count: 3 };
    const mine = paths.filter((p) => inShard(shard, p));
    assert.ok(mine.length > 0 && mine.length < paths.length, 'the fixture spreads over shards');
    assert.deepEqual((await plan(cache, [], {}, false, shard)).removed, mine.sort());
    assert.deepEqual((await plan(cache, [], {})).removed, paths.sort(), 'unsharded: every missing path');
  });
});

describe('SplitWriter parts', () => {
  it('commits a part every partRows outcomes and the rest on finish', async () => {
    const cache = await newCache();
    const writer = await open(cache, { partRows: 3 });
    const splitDir = path.join(cache, 'train');
    const parts = async () => (await fs.readdir(splitDir)).filter((n) => n.endsWith('.arrow')).length;
    await writer.add([row('a', 1, 1)], Float32Array.from([1, 1]), []);
    await writer.add([row('b', 1, 1)], Float32Array.from([2, 2]), []);
    assert.equal(await parts(), 0, 'two pending of three');
    await writer.add([], new Float32Array(0), [failure('c', 1, 1)]);
    assert.equal(await parts(), 1, 'a failure counts towards partRows');
    await writer.add([row('d', 1, 1)], Float32Array.from([4, 4]), []);
    assert.equal(await parts(), 1);
    await writer.finish([]);
    assert.equal(await parts(), 2);
    await writer.finish([]);
    assert.equal(await parts(), 2, 'nothing pending: no empty part');
    await writer.close();
    const set = await (await FeatureCache.open(cache)).read('train');
    assert.deepEqual(set.paths, ['a', 'b', 'd']);
    assert.deepEqual([...set.features], [1, 1, 2, 2, 4, 4]);
    const reader = await FeatureCache.open(cache);
    const metas = await Promise.all((await reader.partFiles('train')).map(async (f) => (await readPart(f)).meta));
    assert.deepEqual(
      metas.map((m) => m.removed),
      [[], []],
      'a commit in mid-run records no removals',
    );
  });

  it('commits failures alone, and removals alone, on finish', async () => {
    const cache = await newCache();
    await commit(cache, [row('gone', 1, 1)]);
    const writer = await open(cache);
    await writer.add([], new Float32Array(0), [failure('bad', 1, 1)]);
    await writer.finish([]);
    const reader = await FeatureCache.open(cache);
    assert.deepEqual(
      (await reader.failures('train')).map((f) => f.path),
      ['bad'],
    );
    await writer.finish(['gone']);
    await writer.close();
    assert.equal((await reader.latest('train')).get('gone')!.kind, 'removed');
  });

  it('keeps the parts of earlier runs: each run names its parts apart', async () => {
    const cache = await newCache();
    await commit(cache, [row('x', 1, 1), row('y', 1, 1)]);
    await commit(cache, [row('w', 2, 2), row('x', 2, 2)]);
    const set = await (await FeatureCache.open(cache)).read('train');
    assert.deepEqual(set.paths, ['w', 'x', 'y']);
    assert.deepEqual([...set.features], [0, 0, 1, 1, 1, 1], 'x from the second run (its second row), y from the first');
  });

  it("holds the split's lock: a second writer is refused in one line naming the cache, split and shard", async () => {
    const cache = await newCache();
    const first = await open(cache, { shard: { index: 1, count: 2 } });
    try {
      await assert.rejects(open(cache, { shard: { index: 1, count: 2 } }), (e: Error) =>
        e.message.startsWith(`cache ${cache} split train shard 1of2: another featcache process (pid ${process.pid}`),
      );
      const other = await open(cache, { shard: { index: 0, count: 2 } });
      await other.close();
    } finally {
      await first.close();
    }
    await (await open(cache, { shard: { index: 1, count: 2 } })).close();
  });

  it('releases the lock when opening fails after taking it', async () => {
    const cache = await newCache();
    await fs.mkdir(path.join(cache, 'train'), { recursive: true });
    // The manifest goes bad between the lock and the read of the split (a damaged part would only be set aside).
    await fs.writeFile(path.join(cache, 'cache.json'), '{}');
    await assert.rejects(open(cache), /cache\.json: not a featcache cache manifest/);
    assert.ok(!(await fs.readdir(path.join(cache, 'train'))).some((n) => n.startsWith('.lock')), 'no lock left behind');
  });

  it('a failed commit says which file, why (the error code), and that earlier parts are intact', async () => {
    const cache = await newCache();
    const writer = await open(cache, { partRows: 1 });
    // The split folder turns into a file under the writer: every write now fails with ENOTDIR.
    await fs.rm(path.join(cache, 'train'), { recursive: true });
    await fs.writeFile(path.join(cache, 'train'), 'in the way');
    await assert.rejects(writer.add([row('a', 1, 1)], Float32Array.from([1, 1]), []), (e: Error) =>
      /^cache .*: cannot write .*part-.*\.arrow \((ENOTDIR|ENOENT)\); parts already written are intact/.test(e.message),
    );
    await writer.close().catch(() => {});
  });

  it('accounts the seconds spent committing', async () => {
    const cache = await newCache();
    const writer = await open(cache);
    const started = performance.now();
    await writer.add([row('a', 1, 1)], Float32Array.from([1, 1]), []);
    await writer.finish([]);
    const elapsedS = (performance.now() - started) / 1000;
    await writer.close();
    assert.ok(
      writer.writeS > 0 && writer.writeS <= elapsedS,
      `writeS ${writer.writeS} within the ${elapsedS} s the commit took`,
    );
  });

  it('names parts so that file order is commit order, past ten parts in one run', async () => {
    const cache = await newCache();
    const writer = await open(cache, { partRows: 1 });
    for (let k = 0; k < 12; k++) await writer.add([row('same.jpg', 1, k)], Float32Array.from([k, -k]), []);
    await writer.finish([]);
    await writer.close();
    const set = await (await FeatureCache.open(cache)).read('train');
    assert.deepEqual([...set.features], [11, -11], 'the last write wins');
    assert.equal((await (await FeatureCache.open(cache)).latest('train')).get('same.jpg')!.mtimeMs, 11);
  });

  it("a later run's parts sort after an earlier run's", async () => {
    const cache = await newCache();
    await commit(cache, [row('x', 1, 1)]);
    await new Promise((r) => setTimeout(r, 5));
    const writer = await open(cache);
    await writer.add([row('x', 2, 2)], Float32Array.from([7, 7]), []);
    await writer.finish([]);
    await writer.close();
    assert.deepEqual([...(await (await FeatureCache.open(cache)).read('train')).features], [7, 7]);
  });

  it('caps rows per part so a part stays under MAX_PART_BYTES, and never below one row', async () => {
    const cache = await newCache();
    const rowsFitting = (dim: number) => Math.floor(MAX_PART_BYTES / (dim * 4));
    for (const [dim, partRows, expected] of [
      [2, 500, 500],
      [2 ** 26, 500, rowsFitting(2 ** 26)],
      [2 ** 26 + 1, 500, 1],
      [2 ** 28, 500, 1],
      [4, 0, 1],
    ] as const) {
      const writer = await open(cache, { dim, partRows });
      assert.equal(writer.partRows, expected, `dim ${dim}, partRows ${partRows}`);
      await writer.close();
    }
    assert.equal(rowsFitting(2 ** 26), 2);
  });

  it('labels shards K of N, and an unsharded writer 0 of 1', () => {
    assert.equal(shardLabel(undefined), '0of1');
    assert.equal(shardLabel({ index: 2, count: 5 }), '2of5');
  });
});
