import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { exactDistance, exactKnn } from '../../src/neighbors/exact.js';
import { SplitSearcher, knnGraph, neighbors } from '../../src/neighbors/search.js';
import { FeatureCache } from '../../src/store/reader.js';
import { tempDir } from '../support/helpers.js';
import { monkeysCache, needsMonkeys } from '../support/neighbors.js';
import { clusteredRows, syntheticCache, syntheticManifest, writeSyntheticPart } from '../support/synthetic-rows.js';

const names = (prefix: string, n: number, from = 0) =>
  Array.from({ length: n }, (_, i) => `${prefix}${String(from + i).padStart(5, '0')}.jpg`);

function recallAt(k: number, approx: Int32Array, exact: Int32Array, queries: number): number {
  let hits = 0;
  for (let q = 0; q < queries; q++) {
    const truth = new Set(exact.subarray(q * k, (q + 1) * k));
    for (const i of approx.subarray(q * k, (q + 1) * k)) if (truth.has(i)) hits++;
  }
  return hits / (queries * k);
}

describe('HNSW index persisted beside the parts', () => {
  it('updates incrementally when parts are added, and never returns a replaced or removed row', async () => {
    const cache = await tempDir();
    const dim = 32;
    await syntheticCache(cache, dim);
    const first = clusteredRows(3000, dim, 20, 1);
    await writeSyntheticPart(cache, 'train', 'part-001.arrow', names('r', 3000), first, { dim });

    const built = await SplitSearcher.open(cache, 'train', { method: 'hnsw' });
    assert.deepEqual(built.indexUpdate, { added: 3000, removed: 0, rebuilt: true, reason: 'no index yet' });
    const q = clusteredRows(300, dim, 20, 1).subarray(0, 300 * dim);
    const approx = await built.search(q, 300, 10);
    const exact = await exactKnn(q, 300, built.rows.features, built.rows.count, dim, { k: 10, metric: 'cosine' });
    const recall = recallAt(10, approx.indices, exact.indices, 300);
    assert.ok(recall >= 0.95, `recall@10 ${recall}`);
    await built.close();

    // A second extract run: 500 new rows, r00005 re-extracted to a far-away vector, r00007 removed.
    const far = Float32Array.from({ length: dim }, (_, d) => (d % 2 ? -50 : 50));
    const added = clusteredRows(500, dim, 20, 2);
    const second = new Float32Array(501 * dim);
    second.set(added);
    second.set(far, 500 * dim);
    await writeSyntheticPart(cache, 'train', 'part-002.arrow', [...names('s', 500), 'r00005.jpg'], second, {
      dim,
      removed: ['r00007.jpg'],
    });
    const updated = await SplitSearcher.open(cache, 'train', { method: 'hnsw' });
    assert.deepEqual(updated.indexUpdate, { added: 501, removed: 2, rebuilt: false, reason: 'up to date' });
    assert.equal(updated.rows.count, 3499);
    const graphs = (await fs.readdir(path.join(cache, 'train', 'neighbors'))).filter((f) => f.endsWith('.usearch'));
    assert.equal(graphs.length, 1, `one graph file left: ${graphs.join(', ')}`);

    // Query with the old vectors of r00005 and r00007: their stale copies (distance 0) must not come back.
    const stale = new Float32Array(2 * dim);
    stale.set(first.subarray(5 * dim, 6 * dim));
    stale.set(first.subarray(7 * dim, 8 * dim), dim);
    const found = await updated.search(stale, 2, 10);
    for (let i = 0; i < 20; i++) {
      const row = found.indices[i]!;
      assert.ok(row >= 0);
      assert.notEqual(updated.rows.paths[row], 'r00007.jpg');
      // The distance reported is the distance to the row's current features: no stale vector behind the key.
      const d = exactDistance(stale, Math.floor(i / 10), updated.rows.features, row, dim, 'cosine');
      assert.ok(Math.abs(d - found.distances[i]!) < 1e-4, `${updated.rows.paths[row]}: ${d} vs ${found.distances[i]}`);
    }
    // The re-extracted row is found at its new place.
    const atFar = await updated.search(far, 1, 1);
    assert.equal(updated.rows.paths[atFar.indices[0]!], 'r00005.jpg');
    await updated.close();

    const again = await SplitSearcher.open(cache, 'train', { method: 'hnsw' });
    assert.deepEqual(again.indexUpdate, { added: 0, removed: 0, rebuilt: false, reason: 'up to date' });
    await again.close();
  });

  it('refuses a cache with mixed identities, naming the part and the difference', async () => {
    const cache = await tempDir();
    const dim = 4;
    await syntheticCache(cache, dim);
    await writeSyntheticPart(cache, 'train', 'part-001.arrow', names('r', 3), new Float32Array(3 * dim).fill(1), {
      dim,
    });
    await writeSyntheticPart(cache, 'train', 'part-002.arrow', names('x', 2), new Float32Array(2 * dim).fill(1), {
      dim,
      provenance: syntheticManifest(dim, { precision: 'int8' }),
    });
    await assert.rejects(
      neighbors({ cache, split: 'train', k: 2 }),
      /part-002\.arrow: features computed differently.*precision fp32 vs int8/,
    );
    await writeSyntheticPart(cache, 'val', 'part-001.arrow', names('v', 3), new Float32Array(3 * dim).fill(1), {
      dim,
      provenance: syntheticManifest(dim, { modelSha256: 'b'.repeat(64) }),
    });
    await assert.rejects(neighbors({ cache, split: 'val', k: 2 }), /model sha256 aaaaaaaaaaaa… vs bbbbbbbbbbbb…/);
  });
});

describe('neighbors and knnGraph over cached splits', () => {
  it('query split against reference split equals exactKnn over the reader’s rows', async () => {
    const cache = await tempDir();
    const dim = 16;
    await syntheticCache(cache, dim);
    await writeSyntheticPart(cache, 'train', 'part-001.arrow', names('t', 400), clusteredRows(400, dim, 5, 3), { dim });
    await writeSyntheticPart(cache, 'val', 'part-001.arrow', names('v', 50), clusteredRows(50, dim, 5, 4), { dim });
    const got = await neighbors({ cache, split: 'val', against: 'train', k: 5, metric: 'l2' });
    const reader = await FeatureCache.open(cache);
    const [val, train] = [await reader.read('val'), await reader.read('train')];
    const want = await exactKnn(val.features, 50, train.features, 400, dim, { k: 5, metric: 'l2' });
    assert.deepEqual(got.indices, want.indices);
    assert.deepEqual(got.query.paths, val.paths);
    assert.deepEqual(got.reference.paths, train.paths);
    assert.equal(got.method, 'exact');
  });

  it('knnGraph is cached with provenance, reused, and recomputed when a part is added', async () => {
    const cache = await tempDir();
    const dim = 8;
    await syntheticCache(cache, dim);
    await writeSyntheticPart(cache, 'train', 'part-001.arrow', names('t', 300), clusteredRows(300, dim, 4, 5), { dim });
    const first = await knnGraph({ cache, split: 'train', k: 6, metric: 'cosine' });
    const rows = await (await FeatureCache.open(cache)).read('train');
    const want = await exactKnn(rows.features, 300, rows.features, 300, dim, {
      k: 6,
      metric: 'cosine',
      excludeSelf: true,
    });
    assert.equal(first.cached, false);
    assert.deepEqual(first.indices, want.indices);
    const meta = JSON.parse(await fs.readFile(path.join(cache, 'train/neighbors/graph-cosine-k6.json'), 'utf8'));
    assert.equal(meta.identity.modelSha256, 'a'.repeat(64));
    assert.deepEqual(
      meta.parts.map((p: { name: string }) => p.name),
      ['part-001.arrow'],
    );
    const second = await knnGraph({ cache, split: 'train', k: 6, metric: 'cosine' });
    assert.equal(second.cached, true);
    assert.deepEqual(second.indices, first.indices);
    assert.deepEqual(second.distances, first.distances);
    await writeSyntheticPart(cache, 'train', 'part-002.arrow', names('u', 10), clusteredRows(10, dim, 4, 6), { dim });
    const third = await knnGraph({ cache, split: 'train', k: 6, metric: 'cosine' });
    assert.equal(third.cached, false);
    assert.equal(third.paths.length, 310);
  });

  it(
    'HNSW on real features (monkeys training, MobileNetV2): recall@10 ≥ 0.95 against the exact engine',
    { skip: needsMonkeys },
    async () => {
      const cache = await monkeysCache(['training']);
      const exact = await neighbors({ cache, split: 'training', k: 10, method: 'exact' });
      const approx = await neighbors({ cache, split: 'training', k: 10, method: 'hnsw' });
      const recall = recallAt(10, approx.indices, exact.indices, exact.query.count);
      assert.ok(recall >= 0.95, `recall@10 ${recall}`);
      await fs.rm(path.dirname(cache), { recursive: true, force: true });
    },
  );
});
