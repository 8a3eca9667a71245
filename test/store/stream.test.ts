import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { syntheticManifest, writeSyntheticCache } from '../../scripts/synthetic-cache.js';
import { ensureManifest } from '../../src/store/manifest.js';
import { writePart } from '../../src/store/part.js';
import { FeatureCache } from '../../src/store/reader.js';
import { type RowBatch, featureSetCost, streamRows } from '../../src/store/stream.js';
import { tempDir } from '../support/helpers.js';

async function collect(stream: AsyncIterable<RowBatch>): Promise<{ key: string; label: number; values: number[] }[]> {
  const rows: { key: string; label: number; values: number[] }[] = [];
  for await (const b of stream)
    for (let r = 0; r < b.count; r++)
      rows.push({ key: b.keys[r]!, label: b.labels[r]!, values: [...b.features.subarray(r * b.dim, (r + 1) * b.dim)] });
  return rows;
}

describe('streamRows: the split in a seeded shuffled order, through a bounded buffer', () => {
  let cache: string;
  before(async () => {
    cache = await tempDir();
    await writeSyntheticCache(cache, { rows: 600, valRows: 0, dim: 4, classes: 6, partRows: 50, seed: 3, noise: 0.5 });
  });

  it('yields exactly the rows the in-memory reader gives (as a multiset), in batches of the asked size', async () => {
    const reader = await FeatureCache.open(cache);
    const whole = await reader.read('train');
    const batches: RowBatch[] = [];
    for await (const b of streamRows(reader, 'train', { seed: 1, bufferRows: 120, batchRows: 64 })) batches.push(b);
    assert.deepEqual(
      batches.map((b) => b.count),
      [...Array(9).fill(64), 600 - 9 * 64],
    );
    const streamed = await collect(streamRows(reader, 'train', { seed: 1, bufferRows: 120, batchRows: 64 }));
    const sorted = [...streamed].sort((a, b) => (a.key < b.key ? -1 : 1));
    assert.deepEqual(
      sorted.map((r) => r.key),
      whole.paths,
    );
    sorted.forEach((r, i) => {
      assert.equal(r.label, whole.labels[i]);
      assert.deepEqual(r.values, [...whole.features.subarray(i * 4, (i + 1) * 4)]);
    });
  });

  it('same seed gives the same order, another seed another; the order mixes classes across parts', async () => {
    const reader = await FeatureCache.open(cache);
    const options = { bufferRows: 200, batchRows: 32 };
    const a = (await collect(streamRows(reader, 'train', { ...options, seed: 7 }))).map((r) => r.key);
    const b = (await collect(streamRows(reader, 'train', { ...options, seed: 7 }))).map((r) => r.key);
    const c = (await collect(streamRows(reader, 'train', { ...options, seed: 8 }))).map((r) => r.key);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
    // Parts are class-ordered (100 rows per class, 50 per part): the first 50 rows out must span several classes.
    const first = await collect(streamRows(reader, 'train', { ...options, seed: 7 }));
    assert.ok(new Set(first.slice(0, 50).map((r) => r.label)).size >= 3, 'first rows from >= 3 classes');
    assert.notDeepEqual(a, (await reader.read('train')).paths, 'not the sorted order');
  });

  it('keeps only what `keep` accepts', async () => {
    const reader = await FeatureCache.open(cache);
    const rows = await collect(
      streamRows(reader, 'train', { seed: 1, bufferRows: 50, batchRows: 64, keep: (_, label) => label === 2 }),
    );
    assert.equal(rows.length, 100);
    assert.ok(rows.every((r) => r.label === 2));
  });

  it('never yields superseded or removed rows (last write wins across parts)', async () => {
    const dir = await tempDir();
    await ensureManifest(dir, syntheticManifest(2, 2));
    await fs.mkdir(path.join(dir, 'train'));
    const row = (p: string, label: number) => ({ path: p, label, labelName: `class000${label}`, size: 1, mtimeMs: 1 });
    const meta = (removed: string[] = []) => ({
      split: 'train',
      shard: '0of1',
      runId: 'r',
      dim: 2,
      failures: [],
      removed,
      provenance: {},
    });
    await writePart(path.join(dir, 'train', 'part-001.arrow'), {
      meta: meta(),
      rows: [row('a', 0), row('b', 1), row('c', 0)],
      features: Float32Array.of(1, 1, 2, 2, 3, 3),
    });
    await writePart(path.join(dir, 'train', 'part-002.arrow'), {
      meta: meta(['c']),
      rows: [row('b', 0), row('d', 1)],
      features: Float32Array.of(9, 9, 4, 4),
    });
    const reader = await FeatureCache.open(dir);
    for (const seed of [0, 1, 2, 3]) {
      const rows = await collect(streamRows(reader, 'train', { seed, bufferRows: 2, batchRows: 2 }));
      const byKey = Object.fromEntries(rows.map((r) => [r.key, { label: r.label, values: r.values }]));
      assert.deepEqual(byKey, {
        a: { label: 0, values: [1, 1] },
        b: { label: 0, values: [9, 9] },
        d: { label: 1, values: [4, 4] },
      });
      assert.equal(rows.length, 3);
    }
  });

  it('states what loading the split whole would cost, from the part indexes', async () => {
    const reader = await FeatureCache.open(cache);
    const cost = await featureSetCost(reader, 'train');
    assert.equal(cost.rows, 600);
    assert.equal(cost.featureBytes, 600 * 4 * 4);
    assert.ok(cost.peakBytes >= 2 * cost.featureBytes);
    assert.match(cost.text, /600 rows × 4/);
  });
});
