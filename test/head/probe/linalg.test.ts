import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  MatMul,
  matMulJs,
  matMulTransAJs,
  matMulTransBJs,
  pivotedCholesky,
  solvePivotTranspose,
} from '../../../src/head/probe/linalg.js';
import { seededRandom } from '../../../src/util/random.js';

const random = seededRandom(11);
const matrix = (rows: number, cols: number) => Float64Array.from({ length: rows * cols }, () => random() * 2 - 1);

/** The textbook triple loop, the reference the faster paths are checked against. */
function naive(
  a: Float64Array,
  b: Float64Array,
  m: number,
  k: number,
  n: number,
  transA = false,
  transB = false,
): Float64Array {
  const at = (i: number, l: number) => (transA ? a[l * m + i]! : a[i * k + l]!);
  const bt = (l: number, j: number) => (transB ? b[j * k + l]! : b[l * n + j]!);
  return Float64Array.from({ length: m * n }, (_, x) => {
    const [i, j] = [Math.floor(x / n), x % n];
    let s = 0;
    for (let l = 0; l < k; l++) s += at(i, l) * bt(l, j);
    return s;
  });
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

describe('products', () => {
  const mm = new MatMul(0);
  after(() => mm.dispose());

  it('plain JS equals the triple loop for A·B, Aᵀ·B and A·Bᵀ', () => {
    const [m, k, n] = [7, 5, 3];
    const a = matrix(m, k);
    assert.ok(
      maxDiff(matMulJs(a, matrix(k, n).fill(0.5), m, k, n), naive(a, new Float64Array(k * n).fill(0.5), m, k, n)) <
        1e-12,
    );
    const b = matrix(k, n);
    assert.ok(maxDiff(matMulJs(a, b, m, k, n), naive(a, b, m, k, n)) < 1e-12);
    const c = matrix(m, n);
    assert.ok(maxDiff(matMulTransAJs(a, c, m, k, n), naive(a, c, k, m, n, true)) < 1e-12);
    const d = matrix(n, k);
    assert.ok(maxDiff(matMulTransBJs(a, d, m, k, n), naive(a, d, m, k, n, false, true)) < 1e-12);
  });

  it('onnxruntime gives the same products to float32 precision, and counts the multiply-adds', async () => {
    const [m, k, n] = [33, 70, 12];
    const a = matrix(m, k);
    const b = matrix(k, n);
    const c = matrix(m, n);
    const d = matrix(n, k);
    const before = mm.macs;
    // Sums of 70 products of numbers in [-1, 1], rounded through float32: errors stay near 1e-5.
    assert.ok(maxDiff(await mm.ab(a, b, m, k, n), naive(a, b, m, k, n)) < 1e-4);
    assert.ok(maxDiff(await mm.atb(a, c, m, k, n), naive(a, c, k, m, n, true)) < 1e-4);
    assert.ok(maxDiff(await mm.abt(a, d, m, k, n), naive(a, d, m, k, n, false, true)) < 1e-4);
    assert.equal(mm.macs - before, 3 * m * k * n);
  });

  it('small products stay in JS, exactly', async () => {
    const small = new MatMul(1e9);
    const [m, k, n] = [4, 3, 2];
    const a = matrix(m, k);
    const b = matrix(k, n);
    assert.deepEqual(await small.ab(a, b, m, k, n), matMulJs(a, b, m, k, n));
    await small.dispose();
  });
});

describe('pivoted Cholesky', () => {
  it('factors a rank-deficient Gram matrix: the rank of the rows, F·Fᵀ = K, duplicates add nothing', () => {
    const [n, rank, dim] = [9, 4, 12];
    // 9 rows in a 4-dimensional subspace of 12 dimensions, two of them exact copies.
    const basis = matrix(rank, dim);
    const coords = matrix(n, rank);
    coords.set(coords.subarray(0, rank), 7 * rank);
    coords.set(coords.subarray(rank, 2 * rank), 8 * rank);
    const x = matMulJs(coords, basis, n, rank, dim);
    const k = matMulTransBJs(x, x, n, dim, n);
    const chol = pivotedCholesky(k, n);
    assert.equal(chol.rank, rank);
    assert.equal(new Set(chol.pivots).size, rank);
    const back = matMulTransBJs(chol.factor, chol.factor, n, rank, n);
    assert.ok(maxDiff(back, k) < 1e-9 * Math.max(...k.map(Math.abs)));
    // The pivot rows' block is lower triangular with a positive diagonal.
    chol.pivots.forEach((p, i) => {
      assert.ok(chol.factor[p * rank + i]! > 0);
      for (let j = i + 1; j < rank; j++) assert.equal(chol.factor[p * rank + j], 0);
    });
  });

  it('pivots: a duplicate right after its original does not end the factorisation early', () => {
    // Without pivoting, row 1 (a copy of row 0) would have a zero pivot at step 1 and stop at rank 1.
    const x = matrix(5, 8);
    x.set(x.subarray(0, 8), 8);
    const chol = pivotedCholesky(matMulTransBJs(x, x, 5, 8, 5), 5);
    assert.equal(chol.rank, 4);
    assert.ok(!chol.pivots.includes(0) || !chol.pivots.includes(1), 'a row and its copy are never both pivots');
  });

  it('a full-rank matrix keeps every row; solvePivotTranspose inverts the pivot block transposed', () => {
    const n = 6;
    const x = matrix(n, 10);
    const chol = pivotedCholesky(matMulTransBJs(x, x, n, 10, n), n);
    assert.equal(chol.rank, n);
    const b = matrix(n, 3);
    const a = solvePivotTranspose(chol, b, 3);
    // L_Sᵀ·A = B, with L_S the factor's rows in pivot order.
    const ls = Float64Array.from(
      { length: n * n },
      (_, z) => chol.factor[chol.pivots[Math.floor(z / n)]! * n + (z % n)]!,
    );
    assert.ok(maxDiff(naive(ls, a, n, n, 3, true), b) < 1e-9);
  });

  it('an all-zero matrix has rank 0', () => {
    assert.equal(pivotedCholesky(new Float64Array(9), 3).rank, 0);
  });
});
