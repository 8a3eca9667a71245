/**
 * The linear probe: L2-regularised multinomial logistic regression solved to convergence by full-batch L-BFGS,
 * for a whole grid of C values at once (scikit-learn's `LogisticRegression(C=…)`: mean cross-entropy +
 * ‖W‖² / (2·C·n), intercept not penalised). This is the standard linear evaluation of pretrained features (CLIP,
 * DINOv2): a converged convex fit has no learning rate or epoch count to guess, only C.
 *
 * Two things make it fast. (1) When there are fewer rows than feature dimensions (few-shot sets), the optimum's
 * kernel lies in the span of the rows (the gradient is always Xᵀ·R), so the problem is solved exactly in the
 * rows' own coordinates: a pivoted Cholesky of the Gram matrix X·Xᵀ = F·Fᵀ gives F [n, rank], and the kernel is
 * mapped back afterwards. 30 rows × 1280 dims become a 30-dimensional problem. (2) All C values advance in lock
 * step, so each round costs one wide product F·[W₁ … W_C] and one Fᵀ·R for the whole grid.
 */
import {
  DEFAULT_LBFGS_OPTIONS,
  type LbfgsOptions,
  type LbfgsResult,
  type Evaluation,
  minimizeTogether,
} from './lbfgs.js';
import { type Matrix, MatMul, type PivotedCholesky, pivotedCholesky, solvePivotTranspose } from './linalg.js';

export interface ProbeRows {
  /** [count, dim] row-major, already normalised. */
  features: Float32Array;
  count: number;
  dim: number;
}

export interface ProbeTargets {
  labels: Int32Array;
  classes: number;
  /** Per-row weight (class weights); the loss is Σ wᵢ·CEᵢ / Σ wᵢ. */
  rowWeights: Float64Array;
}

/** Where the solver's coordinates live: the features themselves, or the rows' span (fewer rows than dims). */
type Basis = { kind: 'features' } | { kind: 'rows'; chol: PivotedCholesky; pivotRows: Float32Array };

export interface ProbeFits {
  c: readonly number[];
  classes: number;
  dim: number;
  basis: Basis;
  /** Solver coordinates per C: [coords, classes] kernel then [classes] bias. */
  solutions: Float64Array[];
  runs: LbfgsResult[];
  /** Solver-space dimensions (rank of the rows, or dim). */
  coords: number;
}

/**
 * λ for C, so that C means what it means in scikit-learn's `LogisticRegression`: ‖W‖² / (2·C·n) on the mean loss.
 * Two classes are a special case there: its default fits one binary vector w = W₁ − W₀, and at the multinomial
 * optimum W₀ = −W₁, so ‖W‖² = ‖w‖²/2: the multinomial penalty is doubled to match the binary model's C.
 */
export function l2Strength(c: number, rows: number, classes: number): number {
  return (classes === 2 ? 2 : 1) / (c * rows);
}

/** The C whose λ is `lambda` (inverse of l2Strength; λ = 0 is C = ∞). */
export function cForStrength(lambda: number, rows: number, classes: number): number {
  return lambda > 0 ? (classes === 2 ? 2 : 1) / (lambda * rows) : Infinity;
}

/**
 * Mean weighted cross-entropy + λ/2·‖W‖² and its gradient, for the active problems in one wide pass.
 * θ = [W (coords × classes, row-major), b (classes)].
 */
function objective(x: Matrix, n: number, p: number, t: ProbeTargets, lambdas: number[], mm: MatMul) {
  const k = t.classes;
  const total = t.rowWeights.reduce((a, b) => a + b, 0);
  const s = Float64Array.from(t.rowWeights, (w) => w / total);
  return async (ids: number[], points: Float64Array[]): Promise<Evaluation[]> => {
    const wide = ids.length * k;
    const w = new Float64Array(p * wide);
    points.forEach((theta, a) => {
      for (let j = 0; j < p; j++) for (let c = 0; c < k; c++) w[j * wide + a * k + c] = theta[j * k + c]!;
    });
    const z = await mm.ab(x, w, n, p, wide);
    const values = new Float64Array(ids.length);
    const biasGrad = ids.map(() => new Float64Array(k));
    const r = new Float64Array(n * wide);
    for (let i = 0; i < n; i++) {
      for (let a = 0; a < ids.length; a++) {
        const o = i * wide + a * k;
        const bias = points[a]!.subarray(p * k);
        let max = -Infinity;
        for (let c = 0; c < k; c++) max = Math.max(max, (z[o + c]! += bias[c]!));
        const y = t.labels[i]!;
        const margin = z[o + y]! - max;
        let sum = 0;
        for (let c = 0; c < k; c++) sum += z[o + c] = Math.exp(z[o + c]! - max);
        const si = s[i]!;
        values[a]! += si * (Math.log(sum) - margin);
        const g = biasGrad[a]!;
        for (let c = 0; c < k; c++) {
          const v = si * (z[o + c]! / sum - (c === y ? 1 : 0));
          r[o + c] = v;
          g[c]! += v;
        }
      }
    }
    const gw = await mm.atb(x, r, n, p, wide);
    return ids.map((id, a) => {
      const theta = points[a]!;
      const lambda = lambdas[id]!;
      const gradient = new Float64Array(theta.length);
      let norm = 0;
      for (let j = 0; j < p; j++) {
        for (let c = 0; c < k; c++) {
          const v = theta[j * k + c]!;
          norm += v * v;
          gradient[j * k + c] = gw[j * wide + a * k + c]! + lambda * v;
        }
      }
      gradient.set(biasGrad[a]!, p * k);
      return { value: values[a]! + 0.5 * lambda * norm, gradient };
    });
  };
}

function toFloat64(v: Float32Array): Float64Array {
  return Float64Array.from(v);
}

/** Coordinates for the solver: the rows' span (pivoted Cholesky of the Gram matrix) when rows < dim. */
async function solverCoordinates(rows: ProbeRows, mm: MatMul): Promise<{ basis: Basis; x: Matrix; coords: number }> {
  const { features, count: n, dim } = rows;
  if (n >= dim) return { basis: { kind: 'features' }, x: toFloat64(features), coords: dim };
  const gram = await mm.abt(features, features, n, dim, n);
  const chol = pivotedCholesky(gram, n);
  const pivotRows = new Float32Array(chol.rank * dim);
  chol.pivots.forEach((row, i) => pivotRows.set(features.subarray(row * dim, (row + 1) * dim), i * dim));
  return { basis: { kind: 'rows', chol, pivotRows }, x: chol.factor, coords: chol.rank };
}

/**
 * Memory for the problems solved in lock step: each keeps 2·memory history vectors and a few more of its parameter
 * count in float64 (1,000 classes × 2,048 dims is 2 M parameters, 360 MB of history each). Beyond this budget
 * the C values run in consecutive groups.
 */
export const LOCKSTEP_BYTES = 512 * 1024 * 1024;

/** Fits the probe for every C in `c` on `rows` (in lock step, in groups within LOCKSTEP_BYTES) and keeps what maps the solutions back. */
export async function fitProbes(
  rows: ProbeRows,
  targets: ProbeTargets,
  c: readonly number[],
  mm: MatMul,
  lbfgs: Partial<LbfgsOptions> = {},
  lockstepBytes = LOCKSTEP_BYTES,
): Promise<ProbeFits> {
  const { basis, x, coords } = await solverCoordinates(rows, mm);
  const k = targets.classes;
  const lambdas = c.map((v) => l2Strength(v, rows.count, k));
  const parameters = coords * k + k;
  const perProblem = parameters * 8 * (2 * (lbfgs.memory ?? DEFAULT_LBFGS_OPTIONS.memory) + 6);
  const group = Math.max(1, Math.floor(lockstepBytes / perProblem));
  const f = objective(x, rows.count, coords, targets, lambdas, mm);
  const runs: LbfgsResult[] = [];
  for (let first = 0; first < c.length; first += group) {
    const ids = c.slice(first, first + group).map((_, i) => first + i);
    runs.push(
      ...(await minimizeTogether(
        (active, points) =>
          f(
            active.map((a) => ids[a]!),
            points,
          ),
        ids.map(() => new Float64Array(parameters)),
        lbfgs,
      )),
    );
  }
  return { c, classes: k, dim: rows.dim, basis, solutions: runs.map((r) => r.x), runs, coords };
}

/** The solutions' kernels as combinations of the pivot rows: A = L_S⁻ᵀ·W_F, [rank, C·classes]. */
function pivotWeights(fits: ProbeFits & { basis: { kind: 'rows' } }, which: number[]): Matrix {
  const k = fits.classes;
  const wide = which.length * k;
  const wf = new Float64Array(fits.coords * wide);
  which.forEach((ci, a) => {
    const theta = fits.solutions[ci]!;
    for (let j = 0; j < fits.coords; j++) for (let c = 0; c < k; c++) wf[j * wide + a * k + c] = theta[j * k + c]!;
  });
  return solvePivotTranspose(fits.basis.chol, wf, wide);
}

/** Logits [count, classes] of every C's solution on `rows` (normalised like the fit rows). */
export async function probeLogits(fits: ProbeFits, rows: ProbeRows, mm: MatMul): Promise<Float32Array[]> {
  const k = fits.classes;
  const which = fits.c.map((_, i) => i);
  const wide = which.length * k;
  let z: Matrix;
  if (fits.basis.kind === 'rows') {
    const cross = await mm.abt(rows.features, fits.basis.pivotRows, rows.count, fits.dim, fits.coords);
    z = await mm.ab(
      cross,
      pivotWeights(fits as ProbeFits & { basis: { kind: 'rows' } }, which),
      rows.count,
      fits.coords,
      wide,
    );
  } else {
    const w = new Float64Array(fits.dim * wide);
    which.forEach((ci, a) => {
      for (let j = 0; j < fits.dim; j++)
        for (let c = 0; c < k; c++) w[j * wide + a * k + c] = fits.solutions[ci]![j * k + c]!;
    });
    z = await mm.ab(toFloat64(rows.features), w, rows.count, fits.dim, wide);
  }
  return which.map((ci, a) => {
    const out = new Float32Array(rows.count * k);
    const bias = fits.solutions[ci]!.subarray(fits.coords * k);
    for (let i = 0; i < rows.count; i++)
      for (let c = 0; c < k; c++) out[i * k + c] = z[i * wide + a * k + c]! + bias[c]!;
    return out;
  });
}

/** The full-dimensional dense layer of C value number `index`: kernel [dim, classes] and bias. */
export async function probeLayer(
  fits: ProbeFits,
  index: number,
  mm: MatMul,
): Promise<{ kernel: Float32Array; bias: Float32Array }> {
  const k = fits.classes;
  const theta = fits.solutions[index]!;
  const bias = Float32Array.from(theta.subarray(fits.coords * k));
  if (fits.basis.kind === 'features') return { kernel: Float32Array.from(theta.subarray(0, fits.dim * k)), bias };
  const a = pivotWeights(fits as ProbeFits & { basis: { kind: 'rows' } }, [index]);
  const kernel = await mm.atb(toFloat64(fits.basis.pivotRows), a, fits.coords, fits.dim, k);
  return { kernel: Float32Array.from(kernel), bias };
}
