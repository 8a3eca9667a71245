/**
 * The dense linear algebra the linear probe needs, and no more: products (plain JS for small ones, where an
 * onnxruntime call's fixed cost of tens of microseconds dominates; onnxruntime's MLAS kernels on all cores for large
 * ones), Gram matrices, and a pivoted Cholesky factorisation.
 */
import * as os from 'node:os';
import * as ort from '../../onnx/ort.js';
import { DataType, encodeModel, makeIntAttribute, makeModel, makeNode, makeValueInfo } from '../../onnx/build.js';

/** Row-major matrices. Float64 where the solver keeps its state; products may round through float32 (see `MatMul`). */
export type Matrix = Float64Array;

/** C[m,n] = A[m,k]·B[k,n] in plain JS (float64). */
export function matMulJs(a: Matrix, b: Matrix, m: number, k: number, n: number): Matrix {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let j = 0; j < k; j++) {
      const v = a[i * k + j]!;
      if (v === 0) continue;
      const bj = j * n;
      for (let l = 0; l < n; l++) c[ci + l]! += v * b[bj + l]!;
    }
  }
  return c;
}

/** C[k,n] = A[m,k]ᵀ·B[m,n] in plain JS (float64). */
export function matMulTransAJs(a: Matrix, b: Matrix, m: number, k: number, n: number): Matrix {
  const c = new Float64Array(k * n);
  for (let i = 0; i < m; i++) {
    const bi = i * n;
    for (let j = 0; j < k; j++) {
      const v = a[i * k + j]!;
      if (v === 0) continue;
      const cj = j * n;
      for (let l = 0; l < n; l++) c[cj + l]! += v * b[bi + l]!;
    }
  }
  return c;
}

/** C[m,p] = A[m,k]·B[p,k]ᵀ in plain JS (float64): row dot products, as a Gram matrix wants. */
export function matMulTransBJs(
  a: Float32Array | Matrix,
  b: Float32Array | Matrix,
  m: number,
  k: number,
  p: number,
): Matrix {
  const c = new Float64Array(m * p);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < p; j++) {
      let s = 0;
      for (let l = 0; l < k; l++) s += a[i * k + l]! * b[j * k + l]!;
      c[i * p + j] = s;
    }
  }
  return c;
}

/** Products with more multiply-adds than this go to onnxruntime (measured on a 2-core EPYC: JS does ~0.5 G multiply-adds/s, an onnxruntime call costs ~25 µs, so the crossover is near 10 k). */
export const ORT_MIN_MACS = 10_000;

/** Products with fewer multiply-adds than this run on one thread. */
export const PARALLEL_MIN_MACS = 1_000_000;

function gemmGraph(transA: boolean, transB: boolean): Uint8Array {
  const matrix = (name: string) => makeValueInfo(name, DataType.FLOAT, [`${name}0`, `${name}1`]);
  const transposes = [makeIntAttribute('transA', transA ? 1 : 0), makeIntAttribute('transB', transB ? 1 : 0)];
  return encodeModel(
    makeModel({
      name: 'featcache-gemm',
      nodes: [makeNode('Gemm', ['a', 'b'], 'c', { name: 'gemm', attributes: transposes })],
      inputs: [matrix('a'), matrix('b')],
      outputs: [matrix('c')],
    }),
  );
}

/**
 * Matrix products sized by the call: small ones in JS (float64), large ones by onnxruntime (float32 inputs,
 * float32 accumulation by MLAS; results widened back to float64). Sessions open on first use; `dispose` closes them.
 */
export class MatMul {
  private sessions = new Map<string, Promise<ort.InferenceSession>>();
  /** Multiply-adds done, for GFLOP/s. */
  macs = 0;

  constructor(private readonly minOrtMacs = ORT_MIN_MACS) {}

  private session(transA: boolean, transB: boolean, macs: number): Promise<ort.InferenceSession> {
    // Handing a small product to a thread pool costs more than it saves (measured: below ~1 M multiply-adds).
    const threads = macs < PARALLEL_MIN_MACS ? 1 : os.availableParallelism();
    const key = `${transA}${transB}${threads}`;
    let s = this.sessions.get(key);
    if (!s) {
      // Spinning off: on a shared machine spinning workers steal the cores the others need.
      s = ort.InferenceSession.create(gemmGraph(transA, transB), {
        graphOptimizationLevel: 'all',
        intraOpNumThreads: threads,
        executionMode: 'sequential',
        logSeverityLevel: 3,
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
      this.sessions.set(key, s);
    }
    return s;
  }

  private async ort(
    a: Float32Array | Matrix,
    aShape: [number, number],
    b: Float32Array | Matrix,
    bShape: [number, number],
    transA: boolean,
    transB: boolean,
  ): Promise<Matrix> {
    const f32 = (v: Float32Array | Matrix) => (v instanceof Float32Array ? v : Float32Array.from(v));
    const macs = aShape[0] * aShape[1] * (transB ? bShape[0] : bShape[1]);
    const out = await (
      await this.session(transA, transB, macs)
    ).run({ a: new ort.Tensor('float32', f32(a), aShape), b: new ort.Tensor('float32', f32(b), bShape) });
    return Float64Array.from(out.c!.data as Float32Array);
  }

  /** C[m,n] = A[m,k]·B[k,n] */
  async ab(a: Matrix, b: Matrix, m: number, k: number, n: number): Promise<Matrix> {
    this.macs += m * k * n;
    return m * k * n < this.minOrtMacs ? matMulJs(a, b, m, k, n) : this.ort(a, [m, k], b, [k, n], false, false);
  }

  /** C[k,n] = A[m,k]ᵀ·B[m,n] */
  async atb(a: Matrix, b: Matrix, m: number, k: number, n: number): Promise<Matrix> {
    this.macs += m * k * n;
    return m * k * n < this.minOrtMacs ? matMulTransAJs(a, b, m, k, n) : this.ort(a, [m, k], b, [m, n], true, false);
  }

  /** C[m,p] = A[m,k]·B[p,k]ᵀ */
  async abt(a: Float32Array | Matrix, b: Float32Array | Matrix, m: number, k: number, p: number): Promise<Matrix> {
    this.macs += m * k * p;
    return m * k * p < this.minOrtMacs ? matMulTransBJs(a, b, m, k, p) : this.ort(a, [m, k], b, [p, k], false, true);
  }

  /**
   * C[m,p] = A[m,k]·B[p,k]ᵀ on onnxruntime whatever its size, kept in float32 and written into `out` (at least m·p
   * long): for callers that fold a product at once and would only pay for `abt`'s float64 copy (exact kNN).
   */
  async abtInto(a: Float32Array, b: Float32Array, m: number, k: number, p: number, out: Float32Array): Promise<void> {
    const macs = m * k * p;
    this.macs += macs;
    await (
      await this.session(false, true, macs)
    ).run(
      {
        a: new ort.Tensor('float32', a.subarray(0, m * k), [m, k]),
        b: new ort.Tensor('float32', b.subarray(0, p * k), [p, k]),
      },
      { c: new ort.Tensor('float32', out.subarray(0, m * p), [m, p]) },
    );
  }

  /** Releases the sessions that opened; one that failed to open has nothing to release (and its error was thrown where it was used). */
  async dispose(): Promise<void> {
    const opened = await Promise.allSettled(this.sessions.values());
    this.sessions.clear();
    for (const s of opened) if (s.status === 'fulfilled') await s.value.release();
  }
}

export interface PivotedCholesky {
  /** Numerical rank. */
  rank: number;
  /** [n, rank]: row i's coordinates in an orthonormal basis of the rows' span (F·Fᵀ = K up to the dropped pivots). */
  factor: Matrix;
  /** The `rank` rows chosen as pivots, in pivot order: the basis is built from them. */
  pivots: Int32Array;
}

/**
 * Cholesky factorisation of a symmetric positive semi-definite K [n, n] with diagonal pivoting, stopping when the
 * largest remaining pivot is below `relativeTolerance` × the largest diagonal: rows (almost) in the span of the
 * others, such as duplicate images, add no dimension.
 */
export function pivotedCholesky(k: Matrix, n: number, relativeTolerance = 1e-9): PivotedCholesky {
  const diag = Float64Array.from({ length: n }, (_, i) => k[i * n + i]!);
  const scale = Math.max(0, ...diag);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const factor = new Float64Array(n * n);
  let rank = 0;
  for (; rank < n; rank++) {
    let best = rank;
    for (let i = rank + 1; i < n; i++) if (diag[order[i]!]! > diag[order[best]!]!) best = i;
    const p = order[best]!;
    if (!(diag[p]! > relativeTolerance * scale) || scale === 0) break;
    [order[rank], order[best]] = [p, order[rank]!];
    const pivot = Math.sqrt(diag[p]!);
    factor[p * n + rank] = pivot;
    for (let t = rank + 1; t < n; t++) {
      const i = order[t]!;
      let s = k[i * n + p]!;
      for (let l = 0; l < rank; l++) s -= factor[i * n + l]! * factor[p * n + l]!;
      const v = s / pivot;
      factor[i * n + rank] = v;
      diag[i]! -= v * v;
    }
  }
  const compact = new Float64Array(n * rank);
  for (let i = 0; i < n; i++) for (let l = 0; l < rank; l++) compact[i * rank + l] = factor[i * n + l]!;
  return { rank, factor: compact, pivots: order.slice(0, rank) };
}

/**
 * A = L_S⁻ᵀ·B for the pivot rows' lower-triangular block L_S [rank, rank] of a pivoted Cholesky and B [rank, cols]:
 * the weights on the pivot rows whose combination Xₛᵀ·A is the full-dimensional kernel (see probe.ts).
 */
export function solvePivotTranspose(chol: PivotedCholesky, b: Matrix, cols: number): Matrix {
  const r = chol.rank;
  const l = (i: number, j: number) => chol.factor[chol.pivots[i]! * r + j]!;
  const a = new Float64Array(r * cols);
  // L_Sᵀ is upper triangular: back substitution from the last pivot.
  for (let i = r - 1; i >= 0; i--) {
    for (let c = 0; c < cols; c++) {
      let s = b[i * cols + c]!;
      for (let j = i + 1; j < r; j++) s -= l(j, i) * a[j * cols + c]!;
      a[i * cols + c] = s / l(i, i);
    }
  }
  return a;
}
