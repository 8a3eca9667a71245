import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { removeStaleTemporaries } from '../../src/store/lock.js';
import { type CacheManifest, ensureManifest } from '../../src/store/manifest.js';
import { type Row, writePart } from '../../src/store/part.js';
import { FeatureCache } from '../../src/store/reader.js';
import { tempDir } from '../support/helpers.js';

const manifest = (over: Partial<CacheManifest> = {}): CacheManifest => ({
  format: 1,
  modelFile: 'm.onnx',
  modelSha256: 'aaa',
  tappedTensor: 'pool',
  tap: {},
  preset: { name: 'torchvision' },
  exif: 'ignore',
  icc: 'ignore',
  dim: 2,
  classes: ['ants', 'bees'],
  createdAt: 'now',
  versions: {},
  ...over,
});

/**
 * Live ArrayBuffer bytes after full garbage collections (without starting node with --expose-gc). Buffers are
 * freed by finalisers, so collect across a few turns of the event loop.
 */
function liveBuffers(): () => Promise<number> {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  return async () => {
    for (let k = 0; k < 3; k++) {
      gc();
      await new Promise((r) => setTimeout(r, 0));
    }
    return process.memoryUsage().arrayBuffers;
  };
}

const row = (p: string, label: number | null, mtimeMs = 1): Row => ({
  path: p,
  label,
  labelName: label === null ? null : ['ants', 'bees'][label]!,
  size: 1,
  mtimeMs,
});

async function part(
  cache: string,
  name: string,
  rows: Row[],
  values: number[],
  extra: { removed?: string[]; failures?: string[]; dim?: number } = {},
) {
  await fs.mkdir(path.join(cache, 'train'), { recursive: true });
  await writePart(path.join(cache, 'train', name), {
    meta: {
      split: 'train',
      shard: '0of1',
      runId: name,
      dim: extra.dim ?? 2,
      removed: extra.removed ?? [],
      failures: (extra.failures ?? []).map((p) => ({ path: p, stage: 'decode', message: 'bad', size: 1, mtimeMs: 1 })),
      provenance: {},
    },
    rows,
    features: Float32Array.from(values),
  });
}

describe('FeatureCache', () => {
  it('merges parts: newest record of a path wins, removals hide rows, output sorted by path', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    await part(cache, 'part-001.arrow', [row('b.jpg', 1), row('a.jpg', 0), row('c.jpg', 0)], [1, 1, 2, 2, 3, 3]);
    await part(cache, 'part-002.arrow', [row('b.jpg', 1, 2)], [9, 9], { removed: ['c.jpg'], failures: ['d.jpg'] });
    const reader = await FeatureCache.open(cache);
    const set = await reader.read('train');
    assert.deepEqual(set.paths, ['a.jpg', 'b.jpg']);
    assert.deepEqual([...set.features], [2, 2, 9, 9]);
    assert.deepEqual([...set.labels], [0, 1]);
    assert.deepEqual(set.classes, ['ants', 'bees']);
    assert.deepEqual(
      (await reader.failures('train')).map((f) => f.path),
      ['d.jpg'],
    );
    assert.deepEqual(await reader.splits(), ['train']);
  });

  it('merges many parts like a last-write-wins map, sorted by path (checked against a plain Map)', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    // A reference: replay the same writes into a Map, newest last; a removal deletes, a failure hides the row.
    const expected = new Map<string, { value: number; label: number }>();
    const names = ['q.jpg', 'b/z.jpg', 'a.jpg', 'b/a.jpg', 'Z.jpg', 'é.jpg', 'm.jpg', 'c.jpg'];
    for (let k = 0; k < 6; k++) {
      const written = names.filter((_, i) => (i * 7 + k * 3) % 4 !== 0);
      const removed = k === 3 ? ['m.jpg', 'never-there.jpg'] : [];
      const failed = k === 4 ? ['q.jpg'] : [];
      const rows = written.map((p, i) => row(p, (i + k) % 2, k));
      await part(
        cache,
        `part-${k}.arrow`,
        rows,
        rows.flatMap((_, i) => [k * 100 + i, -(k * 100 + i)]),
        { removed, failures: failed },
      );
      for (const p of removed) expected.delete(p);
      for (const p of failed) expected.delete(p);
      rows.forEach((r, i) => expected.set(r.path, { value: k * 100 + i, label: r.label! }));
    }
    const set = await (await FeatureCache.open(cache)).read('train');
    const paths = [...expected.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    assert.deepEqual(set.paths, paths);
    assert.deepEqual(
      [...set.features],
      paths.flatMap((p) => [expected.get(p)!.value, -expected.get(p)!.value]),
    );
    assert.deepEqual(
      [...set.labels],
      paths.map((p) => expected.get(p)!.label),
    );
    assert.equal(set.count, paths.length);
    const latest = await (await FeatureCache.open(cache)).latest('train');
    assert.equal(FeatureCache.liveRows(latest), paths.length, 'liveRows counts live rows only');
  });

  it('gives unlabelled rows label -1 and lists failures sorted by path', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    await part(cache, 'part-001.arrow', [row('u.jpg', null), row('l.jpg', 1)], [1, 2, 3, 4], {
      failures: ['z.jpg', 'b.jpg', 'm.jpg'],
    });
    const reader = await FeatureCache.open(cache);
    const set = await reader.read('train');
    assert.deepEqual(set.paths, ['l.jpg', 'u.jpg']);
    assert.deepEqual([...set.labels], [1, -1]);
    assert.deepEqual(
      (await reader.failures('train')).map((f) => f.path),
      ['b.jpg', 'm.jpg', 'z.jpg'],
    );
  });

  it('lists as splits only folders that hold parts', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    await part(cache, 'part-001.arrow', [row('a.jpg', 0)], [1, 2]);
    await fs.mkdir(path.join(cache, 'empty'));
    await fs.mkdir(path.join(cache, 'val'));
    await fs.writeFile(path.join(cache, 'val', 'notes.txt'), 'not a part');
    await fs.writeFile(path.join(cache, 'part-x.arrow'), 'a file at the top, not a split');
    const reader = await FeatureCache.open(cache);
    assert.deepEqual(await reader.splits(), ['train']);
    const other = await tempDir();
    await ensureManifest(other, manifest());
    await assert.rejects(
      (await FeatureCache.open(other)).read('train'),
      /^FeatcacheError: split train: not in cache .*; the cache is empty — run extract first/,
    );
  });

  it('orders parts by name, not by when the files were created, and reads only part-*.arrow files', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    // Written newest first, so commit order must come from the names (libuv happens to sort directory listings).
    await part(cache, 'part-003.arrow', [row('x.jpg', 0)], [3, 3]);
    await part(cache, 'part-002.arrow', [row('x.jpg', 0)], [2, 2]);
    await part(cache, 'part-001.arrow', [row('x.jpg', 0), row('y.jpg', 0)], [1, 1, 5, 5]);
    await fs.copyFile(path.join(cache, 'train', 'part-001.arrow'), path.join(cache, 'train', 'part-009.arrow.bak'));
    await fs.copyFile(path.join(cache, 'train', 'part-001.arrow'), path.join(cache, 'train', 'old-part-009.arrow'));
    const reader = await FeatureCache.open(cache);
    assert.deepEqual(
      (await reader.partFiles('train')).map((f) => path.basename(f)),
      ['part-001.arrow', 'part-002.arrow', 'part-003.arrow'],
    );
    const set = await reader.read('train');
    assert.deepEqual([...set.features], [3, 3, 5, 5]);
    const counts: number[] = [];
    for await (const batch of reader.batches('train')) counts.push(batch.count);
    assert.deepEqual(counts, [1, 1], 'a part whose rows were all superseded yields no (empty) batch');
  });

  it('streams the snapshot it is given, even when a part is added meanwhile', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    await part(cache, 'part-001.arrow', [row('a.jpg', 0)], [1, 1]);
    const reader = await FeatureCache.open(cache);
    const snapshot = await reader.latest('train');
    await part(cache, 'part-002.arrow', [row('b.jpg', 0)], [2, 2]);
    const paths: string[] = [];
    for await (const batch of reader.batches('train', snapshot)) paths.push(...batch.paths);
    assert.deepEqual(paths, ['a.jpg']);
  });

  it('lists splits sorted, names them when one is missing, and copes with a vanished cache folder', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    for (const split of ['val', 'train', 'extra']) {
      await fs.mkdir(path.join(cache, split), { recursive: true });
      await writePart(path.join(cache, split, 'part-001.arrow'), {
        meta: { split, shard: '0of1', runId: 'r', dim: 2, removed: [], failures: [], provenance: {} },
        rows: [row('a.jpg', 0)],
        features: Float32Array.from([1, 2]),
      });
    }
    const reader = await FeatureCache.open(cache);
    assert.deepEqual(await reader.splits(), ['extra', 'train', 'val']);
    await assert.rejects(
      reader.read('test'),
      /^FeatcacheError: split test: not in cache .*; available: extra, train, val$/,
    );
    await fs.rm(cache, { recursive: true });
    assert.deepEqual(await reader.splits(), []);
  });

  it('refuses a part of another dimension while planning too', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    await part(cache, 'part-001.arrow', [row('a.jpg', 0)], [1, 2, 3], { dim: 3 });
    await assert.rejects(
      (await FeatureCache.open(cache)).latest('train'),
      /part-001.arrow: features are 3-d but the cache's are 2-d/,
    );
  });

  it('ignores temporary files and reports unknown splits and empty caches in one line', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    await part(cache, 'part-001.arrow', [row('a.jpg', 0)], [1, 2]);
    await fs.writeFile(path.join(cache, 'train', '.part-002.arrow.123.456.tmp'), 'half a file');
    const reader = await FeatureCache.open(cache);
    assert.equal((await reader.read('train')).count, 1);
    await assert.rejects(reader.read('val'), /^FeatcacheError: split val: not in cache .*; available: train/);
    await assert.rejects(
      FeatureCache.open(await tempDir()),
      /^FeatcacheError: cache .*: no feature cache here \(no cache.json\); run extract with this cache first/,
    );
  });

  it('refuses a part whose dimension differs from the cache', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    await part(cache, 'part-001.arrow', [row('a.jpg', 0)], [1, 2]);
    await part(cache, 'part-002.arrow', [row('b.jpg', 0)], [1, 2, 3], { dim: 3 });
    const reader = await FeatureCache.open(cache);
    await assert.rejects(reader.read('train'), /part-002.arrow: features are 3-d but the cache's are 2-d/);
  });

  it('streams batches with bounded memory: one part at a time', async () => {
    const cache = await tempDir();
    const dim = 1024;
    const rowsPerPart = 128;
    const partBytes = rowsPerPart * dim * 4;
    const parts = 8;
    await ensureManifest(cache, manifest({ dim }));
    for (let k = 0; k < parts; k++) {
      const rows = [...Array(rowsPerPart).keys()].map((i) => row(`p${k}/${i}.jpg`, 0));
      await part(
        cache,
        `part-${String(k).padStart(3, '0')}.arrow`,
        rows,
        Array.from({ length: rowsPerPart * dim }, (_, i) => k + i / 1e6),
        { dim },
      );
    }
    const reader = await FeatureCache.open(cache);
    const latest = await reader.latest('train');
    // Live buffers while each batch is held: what streaming keeps alive at once.
    const measure = liveBuffers();
    const baseline = await measure();
    let peak = 0;
    const firsts: number[] = [];
    for await (const batch of reader.batches('train', latest)) {
      firsts.push(batch.features[0]!);
      peak = Math.max(peak, (await measure()) - baseline);
    }
    assert.deepEqual(firsts, [...Array(parts).keys()], 'one batch per part, in commit order');
    assert.ok(
      peak < 4 * partBytes,
      `streaming held ${(peak / partBytes).toFixed(1)} parts' worth of buffers at once (split: ${parts} parts)`,
    );
    const whole = await reader.read('train');
    const held = (await measure()) - baseline;
    assert.ok(held >= parts * partBytes, `the measure sees a whole split (${(held / partBytes).toFixed(1)} parts)`);
    assert.equal(whole.count, parts * rowsPerPart);
  });
});

describe('part indexes', () => {
  it('let latest() plan without reading features, and fall back to the part when an index is missing', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    await part(cache, 'part-001.arrow', [row('a.jpg', 0, 5)], [1, 2]);
    await part(cache, 'part-002.arrow', [row('b.jpg', 1, 6)], [3, 4]);
    const reader = await FeatureCache.open(cache);
    // Damage the feature file: planning still works from the index, reading features does not.
    await fs.writeFile(path.join(cache, 'train', 'part-002.arrow'), 'damaged');
    const latest = await reader.latest('train');
    assert.deepEqual([...latest.keys()].sort(), ['a.jpg', 'b.jpg']);
    assert.equal(latest.get('b.jpg')!.mtimeMs, 6);
    await assert.rejects(
      reader.read('train'),
      /part-002\.arrow: damaged part file \(truncated: 7 of \d+ bytes\); re-run extract/,
    );
    await fs.rm(path.join(cache, 'train', 'part-001.index.json'));
    await fs.rm(path.join(cache, 'train', 'part-002.arrow'));
    await fs.rm(path.join(cache, 'train', 'part-002.index.json'));
    assert.deepEqual([...(await reader.latest('train')).keys()], ['a.jpg'], 'index missing: read from the part');
  });

  it("orphaned indexes of this shard are cleaned up, other shards' are left alone", async () => {
    const dir = await tempDir();
    await fs.writeFile(path.join(dir, 'part-1-0of2-9-000000.index.json'), '{}');
    await fs.writeFile(path.join(dir, 'part-1-1of2-9-000000.index.json'), '{}');
    await fs.writeFile(path.join(dir, 'part-1-0of2-9-000001.index.json'), '{}');
    await fs.writeFile(path.join(dir, 'part-1-0of2-9-000001.arrow'), '');
    await removeStaleTemporaries(dir, '0of2');
    assert.deepEqual((await fs.readdir(dir)).sort(), [
      'part-1-0of2-9-000001.arrow',
      'part-1-0of2-9-000001.index.json',
      'part-1-1of2-9-000000.index.json',
    ]);
  });
});

describe('cache manifest', () => {
  it('refuses rows from another model, tap or preset, and changed classes', async () => {
    const cache = await tempDir();
    await ensureManifest(cache, manifest());
    await ensureManifest(cache, manifest());
    await assert.rejects(
      ensureManifest(cache, manifest({ modelSha256: 'bbb' })),
      /^FeatcacheError: cache .*: holds features of a different backbone or preprocessing \(model sha256/,
    );
    await assert.rejects(ensureManifest(cache, manifest({ preset: { name: 'caffe' } })), /preset torchvision vs caffe/);
    await assert.rejects(ensureManifest(cache, manifest({ classes: ['ants', 'bees', 'wasps'] })), /classes changed/);
    await assert.rejects(ensureManifest(cache, manifest({ precision: 'fp16' })), /precision fp32 vs fp16/);
  });

  it('refuses rows resized with another kernel under the same preset name, naming the kernels', async () => {
    // A cache made while the torchvision preset resized with sharp's `linear` kernel, extended by today's preset.
    const cache = await tempDir();
    await ensureManifest(cache, manifest({ preset: { name: 'torchvision', kernel: 'linear' } }));
    await assert.rejects(
      ensureManifest(cache, manifest({ preset: { name: 'torchvision', kernel: 'pil-bilinear' } })),
      /preset torchvision with resize kernel linear vs pil-bilinear/,
    );
  });
});
