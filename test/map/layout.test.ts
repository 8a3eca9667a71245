import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { extract } from '../../src/jobs/extract.js';
import { parseCsv } from '../../src/map/audit-scores.js';
import { mapLayout } from '../../src/map/layout.js';
import { fuzzySimplicialSet, umapLayout } from '../../src/map/umap.js';
import { exactKnn } from '../../src/neighbors/exact.js';
import { loadSplit } from '../../src/neighbors/split.js';
import { FeatureCache } from '../../src/store/reader.js';
import { csvText } from '../../src/util/csv.js';
import { hymenoptera, mobilenetModel, needsShared, repoRoot, tempDir } from '../support/helpers.js';
import { monkeysCache, needsMonkeys, python } from '../support/neighbors.js';
import { clusteredRows, syntheticCache, writeSyntheticPart } from '../support/synthetic-rows.js';

const names = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(5, '0')}.jpg`);
const bytesOf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** A cache of `count` clustered rows in train (and `valCount` in val, drawn around the same centres). */
async function clusteredCache(count: number, valCount = 0, dim = 16): Promise<string> {
  const cache = await tempDir('featcache-map-');
  await syntheticCache(cache, dim);
  await writeSyntheticPart(cache, 'train', 'part-001.arrow', names('t', count), clusteredRows(count, dim, 6, 1), {
    dim,
  });
  if (valCount > 0)
    await writeSyntheticPart(cache, 'val', 'part-001.arrow', names('v', valCount), clusteredRows(valCount, dim, 6, 1), {
      dim,
    });
  return cache;
}

async function layoutOf(cacheDir: string, splits: string[], seed = 0, epochs = 60) {
  const cache = await FeatureCache.open(cacheDir);
  const rows = [];
  for (const s of splits) rows.push(await loadSplit(cache, s));
  return mapLayout(cache, rows, {
    k: 10,
    umap: { epochs, seed, minDist: 0.1, spread: 1, negativeSampleRate: 5, learningRate: 1, repulsionStrength: 1 },
  });
}

describe('map layout', () => {
  it('gives the same coordinates, to the byte, for the same graph and seed; another seed gives another picture', async () => {
    const a = await layoutOf(await clusteredCache(400), ['train'], 7);
    const b = await layoutOf(await clusteredCache(400), ['train'], 7);
    const c = await layoutOf(await clusteredCache(400), ['train'], 8);
    assert.equal(a.cached, false);
    assert.equal(b.cached, false);
    assert.ok(bytesOf(a.x).equals(bytesOf(b.x)) && bytesOf(a.y).equals(bytesOf(b.y)));
    assert.ok(!bytesOf(a.x).equals(bytesOf(c.x)));
    assert.ok([...a.x, ...a.y].every(Number.isFinite));
  });

  it('is reused from the cache while nothing changed, and recomputed when the seed or a part changes', async () => {
    const cache = await clusteredCache(300);
    const dir = path.join(cache, 'train', 'neighbors');
    const first = await layoutOf(cache, ['train']);
    await fs.writeFile(path.join(dir, 'notes.txt'), 'mine');
    const again = await layoutOf(cache, ['train']);
    assert.equal(first.cached, false);
    assert.equal(again.cached, true);
    assert.ok(bytesOf(first.x).equals(bytesOf(again.x)) && bytesOf(first.y).equals(bytesOf(again.y)));
    assert.equal(again.provenance.createdAt, first.provenance.createdAt);

    const reseeded = await layoutOf(cache, ['train'], 1);
    assert.equal(reseeded.cached, false);
    assert.equal(reseeded.provenance.umap.seed, 1);

    // Another extract run adds rows: the graph and the layout are both out of date.
    await writeSyntheticPart(cache, 'train', 'part-002.arrow', names('s', 50), clusteredRows(50, 16, 6, 3), {
      dim: 16,
    });
    const grown = await layoutOf(cache, ['train'], 1);
    assert.equal(grown.cached, false);
    assert.equal(grown.x.length, 350);
    assert.equal(grown.provenance.parts.train!.length, 2);
    const files = await fs.readdir(dir);
    assert.deepEqual(
      files.filter((f) => f.startsWith('layout-')).sort(),
      ['layout-train.json', grown.provenance.file].sort(),
      'one layout file left, the old ones removed',
    );
    assert.equal(
      await fs.readFile(path.join(dir, 'notes.txt'), 'utf8'),
      'mine',
      'a file featcache did not write stays',
    );
    assert.equal((await layoutOf(cache, ['train'], 1)).cached, true);
  });

  it('lays out several splits over one graph of their union, cached and invalidated by any split', async () => {
    const cache = await clusteredCache(200, 80);
    const both = await layoutOf(cache, ['train', 'val']);
    assert.equal(both.x.length, 280);
    assert.deepEqual(both.provenance.splits, ['train', 'val']);
    const metaFile = path.join(cache, 'train', 'neighbors', 'union-train+val-cosine-k10.json');
    const graph = JSON.parse(await fs.readFile(metaFile, 'utf8')) as { count: number; file: string; createdAt: string };
    assert.equal(graph.count, 280);
    // The union's graph links the splits: val rows come from train's clusters, so some neighbours cross.
    const bin = new Uint8Array(await fs.readFile(path.join(cache, 'train', 'neighbors', graph.file)));
    const indices = new Int32Array(bin.buffer, 0, 280 * 10);
    const crossing = [...indices.subarray(0, 200 * 10)].filter((j) => j >= 200).length;
    assert.ok(crossing > 0, 'train rows have val neighbours');

    // A new seed reuses the union graph; a new val part recomputes it.
    await layoutOf(cache, ['train', 'val'], 5);
    assert.equal(JSON.parse(await fs.readFile(metaFile, 'utf8')).createdAt, graph.createdAt);
    await writeSyntheticPart(cache, 'val', 'part-002.arrow', names('w', 20), clusteredRows(20, 16, 6, 4), { dim: 16 });
    const grown = await layoutOf(cache, ['train', 'val'], 5);
    assert.equal(grown.cached, false);
    assert.equal(grown.x.length, 300);
    assert.notEqual(JSON.parse(await fs.readFile(metaFile, 'utf8')).createdAt, graph.createdAt);
    // The single split's layout is its own, not the union's.
    assert.equal((await layoutOf(cache, ['train'])).x.length, 200);
  });

  it("builds umap-learn's fuzzy union: symmetric, weights in (0, 1], every point's nearest neighbour at weight 1", async () => {
    const n = 300;
    const dim = 8;
    const rows = clusteredRows(n, dim, 4, 2);
    const knn = await exactKnn(rows, n, rows, n, dim, { k: 8, metric: 'l2', excludeSelf: true });
    const fuzzy = fuzzySimplicialSet({ count: n, k: 8, ...knn });
    const weights = new Map<string, number>();
    fuzzy.head.forEach((h, e) => weights.set(`${h},${fuzzy.tail[e]}`, fuzzy.weight[e]!));
    for (const [key, w] of weights) {
      const [h, t] = key.split(',');
      assert.ok(w > 0 && w <= 1 + 1e-6, `${key}: ${w}`);
      assert.equal(weights.get(`${t},${h}`), w, `${key} has its reverse edge with the same weight`);
    }
    for (let i = 0; i < n; i++) assert.ok(Math.abs(weights.get(`${i},${knn.indices[i * 8]}`)! - 1) < 1e-6);
  });

  it('keeps clusters apart: each point lies nearer its own cluster’s points than others', () => {
    // Two far-apart groups with a ring graph inside each: the layout must not interleave them.
    const n = 200;
    const k = 5;
    const indices = new Int32Array(n * k);
    const distances = new Float32Array(n * k);
    for (let i = 0; i < n; i++) {
      const base = i < 100 ? 0 : 100;
      for (let j = 0; j < k; j++) {
        indices[i * k + j] = base + ((i - base + j + 1) % 100);
        distances[i * k + j] = 0.1 * (j + 1);
      }
    }
    const { x, y } = umapLayout({ count: n, k, indices, distances }, { epochs: 200, seed: 3 });
    const centre = (from: number) =>
      [0, 1].map((_, d) => [...(d ? y : x).subarray(from, from + 100)].reduce((s, v) => s + v, 0) / 100);
    const [a, b] = [centre(0), centre(100)];
    let misplaced = 0;
    for (let i = 0; i < n; i++) {
      const da = Math.hypot(x[i]! - a[0]!, y[i]! - a[1]!);
      const db = Math.hypot(x[i]! - b[0]!, y[i]! - b[1]!);
      if (i < 100 !== da < db) misplaced++;
    }
    assert.equal(misplaced, 0);
  });

  it("reads featcache's CSV cells back: quotes, commas, line breaks and formula prefixes", () => {
    const cells = ['plain', 'a,b', 'say "hi"', 'two\nlines', '=SUM(A1)', '-minus', "'kept"];
    const text = `${cells.map(csvText).join(',')}\n${cells.map(csvText).reverse().join(',')}\n`;
    assert.deepEqual(parseCsv(text), [cells, [...cells].reverse()]);
  });
});

const hasUmap = spawnSync(python, ['-c', 'import umap, sklearn'], { encoding: 'utf8' }).status === 0;
const needsUmap = hasUmap
  ? false
  : `needs ${python} with umap-learn and scikit-learn (apt-get install python3-umap-learn)`;

/** Trustworthiness at k = 10 of our layout and of umap-learn's on the same features (same neighbourhood and seed). */
async function trustworthiness(cacheDir: string, split: string): Promise<{ ours: number; umapLearn: number }> {
  const cache = await FeatureCache.open(cacheDir);
  const rows = await loadSplit(cache, split);
  const layout = await mapLayout(cache, [rows], { k: 15 });
  const dir = await tempDir('featcache-map-trust-');
  const xy = new Float32Array(rows.count * 2);
  layout.x.forEach((v, i) => {
    xy[2 * i] = v;
    xy[2 * i + 1] = layout.y[i]!;
  });
  await fs.writeFile(path.join(dir, 'features.f32'), bytesOf(rows.features.subarray(0, rows.count * rows.dim)));
  await fs.writeFile(path.join(dir, 'layout.f32'), bytesOf(xy));
  const run = spawnSync(
    python,
    [
      path.join(repoRoot, 'test/map/fixtures/umap_trustworthiness.py'),
      path.join(dir, 'features.f32'),
      String(rows.dim),
      path.join(dir, 'layout.f32'),
      '15',
      '0',
      '10',
    ],
    { encoding: 'utf8', maxBuffer: 1 << 26 },
  );
  assert.equal(run.status, 0, run.stderr);
  await fs.rm(dir, { recursive: true, force: true });
  return JSON.parse(run.stdout) as { ours: number; umapLearn: number };
}

describe("map layout's fuzzy set against umap-learn's", () => {
  it(
    'gives the same edges and weights as umap.umap_.fuzzy_simplicial_set on the same kNN graph',
    { skip: needsUmap },
    async () => {
      const n = 400;
      const dim = 12;
      const k = 10;
      const rows = clusteredRows(n, dim, 5, 9);
      const knn = await exactKnn(rows, n, rows, n, dim, { k, metric: 'cosine', excludeSelf: true });
      const dir = await tempDir('featcache-map-fuzzy-');
      const file = path.join(dir, 'graph.bin');
      await fs.writeFile(file, Buffer.concat([Buffer.from(knn.indices.buffer), bytesOf(knn.distances)]));
      const run = spawnSync(
        python,
        [path.join(repoRoot, 'test/map/fixtures/umap_fuzzy_set.py'), file, String(n), String(k)],
        {
          encoding: 'utf8',
          maxBuffer: 1 << 26,
        },
      );
      assert.equal(run.status, 0, run.stderr);
      const theirs = JSON.parse(run.stdout) as { head: number[]; tail: number[]; weight: number[] };
      const ours = fuzzySimplicialSet({ count: n, k, ...knn });
      const edges = (g: { head: ArrayLike<number>; tail: ArrayLike<number>; weight: ArrayLike<number> }) => {
        const m = new Map<string, number>();
        for (let e = 0; e < g.head.length; e++) if (g.weight[e]! > 0) m.set(`${g.head[e]},${g.tail[e]}`, g.weight[e]!);
        return m;
      };
      const a = edges(ours);
      const b = edges(theirs);
      assert.equal(a.size, b.size);
      for (const [edge, w] of b) {
        assert.ok(a.has(edge), `edge ${edge} missing`);
        assert.ok(Math.abs(a.get(edge)! - w) < 1e-5, `${edge}: ${a.get(edge)} vs ${w}`);
      }
      await fs.rm(dir, { recursive: true, force: true });
    },
  );
});

describe('map layout quality against umap-learn (trustworthiness at k = 10, MobileNetV2-int8 features)', () => {
  it('monkeys training: within 0.02 of umap-learn', { skip: needsMonkeys || needsUmap }, async () => {
    const t = await trustworthiness(await monkeysCache(['training']), 'training');
    assert.ok(t.ours >= t.umapLearn - 0.02, `ours ${t.ours.toFixed(4)} vs umap-learn ${t.umapLearn.toFixed(4)}`);
  });

  it(
    'hymenoptera train: within 0.02 of umap-learn',
    { skip: needsShared(mobilenetModel, hymenoptera) || needsUmap },
    async () => {
      const cache = path.join(await tempDir('featcache-map-hym-'), 'features');
      await extract({ data: hymenoptera, split: 'train', model: mobilenetModel, tap: 'avgpool', cache, device: 'cpu' });
      const t = await trustworthiness(cache, 'train');
      assert.ok(t.ours >= t.umapLearn - 0.02, `ours ${t.ours.toFixed(4)} vs umap-learn ${t.umapLearn.toFixed(4)}`);
    },
  );
});
