/**
 * L-BFGS for many smooth convex problems at once, in lock step: every round each unfinished problem asks for its
 * objective at one point and a single batched evaluation answers them all, so a caller can price all candidates'
 * points with one wide matrix product (the linear probe's C grid). Each problem keeps its own history, step and
 * line search (backtracking to the Armijo condition from a unit step, as Nocedal & Wright's Algorithm 7.5).
 */

export interface Evaluation {
  value: number;
  gradient: Float64Array;
}

/** Objective values and gradients at `points[i]` for problem `ids[i]`. */
export type BatchObjective = (ids: number[], points: Float64Array[]) => Promise<Evaluation[]>;

export interface LbfgsOptions {
  /** Pairs of (step, gradient change) kept: scipy's and scikit-learn's default is 10. */
  memory: number;
  maxIterations: number;
  /** Converged when the largest gradient component is at most this. */
  gradientTolerance: number;
  /** Converged when an iteration lowers the objective by at most this relative amount (scipy's factr × eps ≈ 2e-9). */
  relativeDecrease: number;
}

export const DEFAULT_LBFGS_OPTIONS: Readonly<LbfgsOptions> = Object.freeze({
  memory: 10,
  maxIterations: 1000,
  gradientTolerance: 1e-6,
  relativeDecrease: 2.2e-9,
});

export interface LbfgsResult {
  x: Float64Array;
  value: number;
  iterations: number;
  evaluations: number;
  /** Why it stopped: gradient, decrease, iterations, or line search (no step lowered the objective). */
  stopped: 'gradient' | 'decrease' | 'iterations' | 'line search';
}

const ARMIJO = 1e-4;

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

function maxAbs(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(a[i]!);
    if (v > m) m = v;
  }
  return m;
}

/**
 * One problem's iterate, history and pending line-search trial. Buffers are allocated once and reused: with
 * hundreds of problems of a few thousand parameters, per-iteration allocation was a third of the solver's time.
 */
class Problem {
  x: Float64Array;
  value = Infinity;
  gradient: Float64Array = new Float64Array();
  direction: Float64Array;
  slope = 0;
  step = 1;
  /** Ring of the last `memory` (s, y) pairs with 1/sᵀy; `spare` receives the next pair before it is accepted. */
  private readonly s: Float64Array[] = [];
  private readonly y: Float64Array[] = [];
  private readonly rho: number[] = [];
  private spare: { s: Float64Array; y: Float64Array } | null = null;
  private gamma = 1;
  private readonly alpha: Float64Array;
  iterations = 0;
  evaluations = 0;
  stopped: LbfgsResult['stopped'] | null = null;
  /** The point asked for this round: the start, then line-search trials. */
  trial: Float64Array;
  private free: Float64Array;

  constructor(
    x0: Float64Array,
    private readonly o: LbfgsOptions,
  ) {
    this.x = x0.slice();
    this.trial = this.x;
    this.free = new Float64Array(x0.length);
    this.direction = new Float64Array(x0.length);
    this.alpha = new Float64Array(o.memory);
  }

  /** Consumes the objective at `trial`; returns false when finished. */
  consume(e: Evaluation): boolean {
    this.evaluations++;
    if (this.value === Infinity) return this.accept(e, true);
    if (e.value <= this.value + ARMIJO * this.step * this.slope) return this.accept(e, false);
    // Backtrack: the minimiser of the quadratic through f(0), f'(0) and f(step), kept within [0.1, 0.5]·step.
    const q = (-this.slope * this.step * this.step) / (2 * (e.value - this.value - this.slope * this.step));
    this.step = Number.isFinite(q) ? Math.min(0.5 * this.step, Math.max(0.1 * this.step, q)) : 0.5 * this.step;
    if (this.step * maxAbs(this.direction) < 1e-14 * Math.max(1, maxAbs(this.x))) return this.finish('line search');
    this.moveTrial();
    return true;
  }

  private accept(e: Evaluation, first: boolean): boolean {
    const previous = this.value;
    if (!first) {
      this.iterations++;
      this.remember(e.gradient);
      // The accepted trial becomes the iterate; the old iterate's buffer takes the next trials.
      [this.x, this.free] = [this.trial, this.x];
    }
    this.value = e.value;
    this.gradient = e.gradient;
    if (maxAbs(e.gradient) <= this.o.gradientTolerance) return this.finish('gradient');
    if (!first && previous - e.value <= this.o.relativeDecrease * Math.max(Math.abs(previous), Math.abs(e.value), 1))
      return this.finish('decrease');
    if (this.iterations >= this.o.maxIterations) return this.finish('iterations');
    this.searchDirection();
    this.slope = dot(this.gradient, this.direction);
    // The first direction is the bare gradient: a unit step in it has no scale, so it is normalised.
    this.step = this.s.length === 0 ? 1 / Math.max(1, Math.sqrt(dot(this.gradient, this.gradient))) : 1;
    this.moveTrial();
    return true;
  }

  /** Keeps (s, y) = (trial − x, g_new − g) unless sᵀy is too small to trust (rounding; convexity makes it > 0). */
  private remember(newGradient: Float64Array): void {
    const n = this.x.length;
    const pair = this.spare ?? { s: new Float64Array(n), y: new Float64Array(n) };
    for (let i = 0; i < n; i++) {
      pair.s[i] = this.trial[i]! - this.x[i]!;
      pair.y[i] = newGradient[i]! - this.gradient[i]!;
    }
    const sy = dot(pair.s, pair.y);
    const yy = dot(pair.y, pair.y);
    if (!(sy > 1e-12 * yy)) {
      this.spare = pair;
      return;
    }
    this.s.push(pair.s);
    this.y.push(pair.y);
    this.rho.push(1 / sy);
    this.gamma = sy / yy;
    if (this.s.length > this.o.memory) {
      this.spare = { s: this.s.shift()!, y: this.y.shift()! };
      this.rho.shift();
    } else {
      this.spare = null;
    }
  }

  /** direction = −H·g by the two-loop recursion, H₀ = (sᵀy / yᵀy)·I from the newest pair. */
  private searchDirection(): void {
    const q = this.direction;
    q.set(this.gradient);
    const n = q.length;
    const m = this.s.length;
    for (let i = m - 1; i >= 0; i--) {
      const y = this.y[i]!;
      const a = this.rho[i]! * dot(this.s[i]!, q);
      this.alpha[i] = a;
      for (let j = 0; j < n; j++) q[j]! -= a * y[j]!;
    }
    const gamma = m > 0 ? this.gamma : 1;
    for (let j = 0; j < n; j++) q[j]! *= gamma;
    for (let i = 0; i < m; i++) {
      const s = this.s[i]!;
      const c = this.alpha[i]! - this.rho[i]! * dot(this.y[i]!, q);
      for (let j = 0; j < n; j++) q[j]! += c * s[j]!;
    }
    for (let j = 0; j < n; j++) q[j] = -q[j]!;
  }

  private moveTrial(): void {
    const p = this.trial === this.x ? this.free : this.trial;
    for (let i = 0; i < p.length; i++) p[i] = this.x[i]! + this.step * this.direction[i]!;
    this.trial = p;
  }

  private finish(why: LbfgsResult['stopped']): boolean {
    this.stopped = why;
    return false;
  }

  result(): LbfgsResult {
    return {
      x: this.x,
      value: this.value,
      iterations: this.iterations,
      evaluations: this.evaluations,
      stopped: this.stopped ?? 'iterations',
    };
  }
}

/** Minimises every problem from its start `x0s[i]`; returns each one's minimiser and how it stopped. */
export async function minimizeTogether(
  objective: BatchObjective,
  x0s: Float64Array[],
  options: Partial<LbfgsOptions> = {},
): Promise<LbfgsResult[]> {
  const o: LbfgsOptions = { ...DEFAULT_LBFGS_OPTIONS, ...options };
  const problems = x0s.map((x) => new Problem(x, o));
  let active = problems.map((_, i) => i);
  while (active.length > 0) {
    const evaluations = await objective(
      active,
      active.map((i) => problems[i]!.trial),
    );
    active = active.filter((i, k) => problems[i]!.consume(evaluations[k]!));
  }
  return problems.map((p) => p.result());
}
