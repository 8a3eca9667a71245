import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { exactKnn, type Metric, prepareReference } from '../../src/neighbors/exact.js';
import { FeatureCache } from '../../src/store/reader.js';
import { seededRandom } from '../../src/util/random.js';
import { monkeysCache, needsMonkeys, needsSklearn, sklearnKnn, type Reference } from '../support/neighbors.js';

/**
 * Same neighbours as scikit-learn, up to ties: at every rank the distances agree within 1e-5, and where the index
 * differs the two candidates are tied (sklearn lists ours at that distance, or ours ties its k-th).
 */
function assertMatches(
  got: { indices: Int32Array; distances: Float32Array },
  reference: Reference,
  k: number,
  label: string,
): { mismatches: number } {
  let mismatches = 0;
  reference.indices.forEach((row, q) => {
    const theirs = reference.distances[q]!;
    for (let j = 0; j < k; j++) {
      const index = got.indices[q * k + j]!;
      const distance = got.distances[q * k + j]!;
      assert.ok(
        Math.abs(distance - theirs[j]!) <= 1e-5,
        `${label}: query ${q} rank ${j}: ${distance} vs sklearn ${theirs[j]}`,
      );
      if (index === row[j]) continue;
      mismatches++;
      const listed = row.indexOf(index);
      const tied =
        listed >= 0 ? Math.abs(theirs[listed]! - distance) <= 1e-5 : Math.abs(theirs[k - 1]! - distance) <= 1e-5;
      assert.ok(tied, `${label}: query ${q} rank ${j}: index ${index} vs sklearn ${row[j]} and not a tie`);
    }
  });
  return { mismatches };
}

describe('exactKnn against scikit-learn NearestNeighbors(brute) on MobileNetV2 features of monkeys', () => {
  let cacheDir = '';
  let train: { features: Float32Array; count: number; dim: number };
  let val: { features: Float32Array; count: number; dim: number };
  const skip = needsMonkeys || needsSklearn;

  before(async () => {
    if (skip) return;
    cacheDir = await monkeysCache(['training', 'validation']);
    const cache = await FeatureCache.open(cacheDir);
    train = await cache.read('training');
    val = await cache.read('validation');
  });
  after(async () => {
    if (cacheDir) await fs.rm(path.dirname(cacheDir), { recursive: true, force: true });
  });

  for (const metric of ['cosine', 'l2'] as Metric[]) {
    it(`validation → training, k = 10, ${metric}: same neighbours, distances within 1e-5`, { skip }, async () => {
      const reference = await sklearnKnn(val.features, train.features, val.dim, 10, metric);
      // Small blocks so queries and references straddle block edges; default blocks hold everything at once.
      for (const blocks of [{ queryBlock: 37, referenceBlock: 101 }, {}]) {
        const got = await exactKnn(val.features, val.count, train.features, train.count, val.dim, {
          k: 10,
          metric,
          ...blocks,
        });
        assertMatches(got, reference, 10, `${metric} ${JSON.stringify(blocks)}`);
      }
    });
  }

  it('training self-kNN, excludeSelf, k = 10: as kneighbors() without X (own row left out)', { skip }, async () => {
    const reference = await sklearnKnn(train.features, null, train.dim, 10, 'cosine');
    const got = await exactKnn(train.features, train.count, train.features, train.count, train.dim, {
      k: 10,
      metric: 'cosine',
      excludeSelf: true,
      queryBlock: 200,
      referenceBlock: 300,
    });
    for (let q = 0; q < train.count; q++)
      for (let j = 0; j < 10; j++) assert.notEqual(got.indices[q * 10 + j], q, `row ${q} lists itself`);
    // training's 64 byte-identical copies (of monkeys' 68; 4 more are in validation) tie at distance 0 with their
    // originals: those must come first.
    const { mismatches } = assertMatches(got, reference, 10, 'self');
    assert.ok(mismatches < train.count, `${mismatches} tie-order differences`);
  });
});

describe('exactKnn edge cases (plain recomputation)', () => {
  it('fewer than k reference rows: index -1, distance Infinity; ties go to the lower index', async () => {
    // Rows 0 and 2 are identical, so they tie for every query; row 1 is farther.
    const reference = Float32Array.from([1, 0, 0, 5, 1, 0]);
    const query = Float32Array.from([2, 0]);
    const got = await exactKnn(query, 1, reference, 3, 2, { k: 5, metric: 'l2' });
    assert.deepEqual([...got.indices], [0, 2, 1, -1, -1]);
    assert.deepEqual([...got.distances].slice(0, 3), [1, 1, Math.fround(Math.sqrt(4 + 25))]);
    assert.deepEqual([...got.distances].slice(3), [Infinity, Infinity]);
  });

  it('excludeSelf on 2 rows with k = 3 leaves the others empty; a zero row is at cosine distance 1', async () => {
    const rows = Float32Array.from([0, 0, 3, 4]);
    const got = await exactKnn(rows, 2, rows, 2, 2, { k: 3, metric: 'cosine', excludeSelf: true });
    assert.deepEqual([...got.indices], [1, -1, -1, 0, -1, -1]);
    assert.deepEqual([...got.distances], [1, Infinity, Infinity, 1, Infinity, Infinity]);
  });

  it('random rows, large enough for onnxruntime: equals brute force in float64', async () => {
    const random = seededRandom(7);
    const dim = 24;
    const [nq, nr, k] = [150, 700, 7];
    const q = Float32Array.from({ length: nq * dim }, () => random() - 0.5);
    const r = Float32Array.from({ length: nr * dim }, () => random() - 0.5);
    const got = await exactKnn(q, nq, r, nr, dim, { k, metric: 'cosine', queryBlock: 64, referenceBlock: 256 });
    for (let i = 0; i < nq; i++) {
      const all = Array.from({ length: nr }, (_, j) => {
        let dot = 0;
        let a = 0;
        let b = 0;
        for (let d = 0; d < dim; d++) {
          dot += q[i * dim + d]! * r[j * dim + d]!;
          a += q[i * dim + d]! ** 2;
          b += r[j * dim + d]! ** 2;
        }
        return { j, d: 1 - dot / Math.sqrt(a * b) };
      }).sort((x, y) => x.d - y.d || x.j - y.j);
      assert.deepEqual(
        [...got.indices.subarray(i * k, (i + 1) * k)],
        all.slice(0, k).map((x) => x.j),
        `query ${i}`,
      );
    }
  });

  it('many exact ties (small integer rows, l2), blocks straddled: ties go to the lower index, as brute force', async () => {
    // Integer coordinates in 0..2 make every product and squared distance exact in float32, so whole runs of
    // candidates tie with the heap's worst: the scan must keep the lower index, block after block.
    const random = seededRandom(5);
    const dim = 8;
    const n = 600;
    const k = 12;
    const rows = Float32Array.from({ length: n * dim }, () => Math.floor(random() * 3));
    for (const excludeSelf of [false, true]) {
      const got = await exactKnn(rows, n, rows, n, dim, {
        k,
        metric: 'l2',
        excludeSelf,
        queryBlock: 50,
        referenceBlock: 70,
      });
      for (let i = 0; i < n; i++) {
        const all = [];
        for (let j = 0; j < n; j++) {
          if (excludeSelf && j === i) continue;
          let s = 0;
          for (let d = 0; d < dim; d++) s += (rows[i * dim + d]! - rows[j * dim + d]!) ** 2;
          all.push({ j, s });
        }
        all.sort((a, b) => a.s - b.s || a.j - b.j);
        assert.deepEqual(
          [...got.indices.subarray(i * k, (i + 1) * k)],
          all.slice(0, k).map((x) => x.j),
          `row ${i}, excludeSelf ${excludeSelf}`,
        );
        assert.deepEqual(
          [...got.distances.subarray(i * k, (i + 1) * k)],
          all.slice(0, k).map((x) => Math.fround(Math.sqrt(x.s))),
        );
      }
    }
  });

  for (const metric of ['cosine', 'l2'] as const)
    it(`a prepared reference (${metric}) answers exactly as an unprepared one, block by block`, async () => {
      const random = seededRandom(11);
      const dim = 16;
      const [nq, nr, k] = [40, 300, 5];
      const q = Float32Array.from({ length: nq * dim }, () => random() - 0.5);
      const r = Float32Array.from({ length: nr * dim }, () => random() - 0.5);
      r.fill(0, 3 * dim, 4 * dim); // a zero row: its unit row stays zero
      const options = { k, metric, queryBlock: 16, referenceBlock: 64 };
      const plain = await exactKnn(q, nq, r, nr, dim, options);
      const prepared = prepareReference(r, nr, dim, metric);
      assert.equal(prepared.unit === null, metric === 'l2', 'unit rows are kept for cosine only');
      const again = await exactKnn(q, nq, r, nr, dim, { ...options, prepared });
      assert.deepEqual([...again.indices], [...plain.indices]);
      assert.deepEqual([...again.distances], [...plain.distances]);
      await assert.rejects(
        exactKnn(q, nq, r, nr - 1, dim, { ...options, prepared }),
        /prepared: expected norms of 299 reference rows/,
      );
    });

  it('refuses k = 0 and excludeSelf with different row counts, naming the option', async () => {
    const rows = new Float32Array(4);
    await assert.rejects(exactKnn(rows, 2, rows, 2, 2, { k: 0, metric: 'l2' }), /k: expected a positive integer/);
    await assert.rejects(
      exactKnn(rows, 1, rows, 2, 2, { k: 1, metric: 'l2', excludeSelf: true }),
      /excludeSelf: expected query and reference to be the same rows/,
    );
  });
});
