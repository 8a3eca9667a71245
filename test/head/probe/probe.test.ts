import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { MatMul } from '../../../src/head/probe/linalg.js';
import { cForStrength, fitProbes, l2Strength, probeLayer, probeLogits } from '../../../src/head/probe/probe.js';
import { softmaxRows } from '../../../src/head/model.js';
import { seededRandom } from '../../../src/util/random.js';
import { repoRoot } from '../../support/helpers.js';

const python = '/usr/bin/python3';
const hasSklearn = spawnSync(python, ['-c', 'import sklearn, numpy'], { encoding: 'utf8' }).status === 0;
const skip = hasSklearn ? false : `needs ${python} with scikit-learn (apt-get install python3-sklearn)`;

interface Data {
  x: Float32Array;
  labels: Int32Array;
  n: number;
  dim: number;
  test: Float32Array;
}

/** Overlapping Gaussian-ish clusters, so the optimum is finite and C matters. */
function data(n: number, dim: number, classes: number, seed: number, noise = 1.5, counts?: number[]): Data {
  const random = seededRandom(seed);
  const centres = Array.from({ length: classes * dim }, () => random() * 2 - 1);
  const labels = counts
    ? Int32Array.from(counts.flatMap((c, k) => Array(c).fill(k)))
    : Int32Array.from({ length: n }, (_, i) => i % classes);
  const row = (l: number) => Array.from({ length: dim }, (_, d) => centres[l * dim + d]! + (random() * 2 - 1) * noise);
  const x = Float32Array.from([...labels].flatMap(row));
  const test = Float32Array.from(Array.from({ length: 20 }, (_, i) => row(i % classes)).flat());
  return { x, labels, n: labels.length, dim, test };
}

function sklearn(
  d: Data,
  c: number[],
  classWeight: 'balanced' | null,
  multiClass: 'multinomial' | 'auto' = 'multinomial',
): { coef: number[][]; intercept: number[]; proba: number[][] }[] {
  const rows = (v: Float32Array) =>
    Array.from({ length: v.length / d.dim }, (_, i) => Array.from(v.subarray(i * d.dim, (i + 1) * d.dim)));
  const r = spawnSync(python, [path.join(repoRoot, 'test/head/fixtures/sklearn_logreg.py')], {
    input: JSON.stringify({ x: rows(d.x), y: [...d.labels], c, classWeight, test: rows(d.test), multiClass }),
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

function weightsOf(labels: Int32Array, classes: number, balanced: boolean): Float64Array {
  const counts = new Array<number>(classes).fill(0);
  for (const l of labels) counts[l]! += 1;
  return Float64Array.from(labels, (l) => (balanced ? labels.length / (classes * counts[l]!) : 1));
}

/**
 * The probe's objective in float64, written out independently: Σ wᵢ·CEᵢ / Σ wᵢ + ‖W‖² / (2·C·n), W [dim, classes]
 * row-major (`at(j, k)`).
 */
function objective(
  d: Data,
  classes: number,
  weights: Float64Array,
  c: number,
  at: (j: number, k: number) => number,
  bias: ArrayLike<number>,
): number {
  let loss = 0;
  let total = 0;
  for (let r = 0; r < d.n; r++) {
    const z = Array.from({ length: classes }, (_, k) => {
      let v = bias[k]!;
      for (let j = 0; j < d.dim; j++) v += d.x[r * d.dim + j]! * at(j, k);
      return v;
    });
    const max = Math.max(...z);
    const lse = max + Math.log(z.reduce((s, v) => s + Math.exp(v - max), 0));
    loss += weights[r]! * (lse - z[d.labels[r]!]!);
    total += weights[r]!;
  }
  let norm = 0;
  for (let j = 0; j < d.dim; j++) for (let k = 0; k < classes; k++) norm += at(j, k) ** 2;
  return loss / total + norm / (2 * c * d.n);
}

/**
 * scikit-learn stops L-BFGS on scipy's default relative decrease (2.2e-9), so its coefficients are a reference to
 * about 1e-4, not 1e-9. The sharp test is the objective: ours must be at least as low as scikit-learn's at its own
 * solution (a wrong λ, gradient or mapping back from the rows' span would leave ours higher), and the predictions
 * must agree.
 */
async function compare(d: Data, classes: number, c: number[], balanced: boolean, mm: MatMul) {
  const weights = weightsOf(d.labels, classes, balanced);
  const fits = await fitProbes(
    { features: d.x, count: d.n, dim: d.dim },
    { labels: d.labels, classes, rowWeights: weights },
    c,
    mm,
    { gradientTolerance: 1e-9, relativeDecrease: 0, maxIterations: 5000 },
  );
  const reference = sklearn(d, c, balanced ? 'balanced' : null);
  const logits = await probeLogits(fits, { features: d.test, count: 20, dim: d.dim }, mm);
  for (let i = 0; i < c.length; i++) {
    const layer = await probeLayer(fits, i, mm);
    const ref = reference[i]!;
    const ours = objective(d, classes, weights, c[i]!, (j, k) => layer.kernel[j * classes + k]!, layer.bias);
    const theirs = objective(d, classes, weights, c[i]!, (j, k) => ref.coef[k]![j]!, ref.intercept);
    // 1e-7: products above 10 k multiply-adds run in float32 (onnxruntime); a wrong λ or gradient costs orders more.
    assert.ok(ours <= theirs * (1 + 1e-7), `C ${c[i]}: objective ${ours} above scikit-learn's ${theirs}`);
    const proba = softmaxRows(logits[i]!, classes);
    let worst = 0;
    ref.proba.flat().forEach((p, j) => (worst = Math.max(worst, Math.abs(p - proba[j]!))));
    assert.ok(worst < 1e-3, `C ${c[i]}: probabilities differ from scikit-learn's by ${worst}`);
    // The saved layer's logits are the logits the selection scored.
    for (let r = 0; r < 20; r++) {
      for (let k = 0; k < classes; k++) {
        let z = layer.bias[k]!;
        for (let j = 0; j < d.dim; j++) z += d.test[r * d.dim + j]! * layer.kernel[j * classes + k]!;
        const scored = logits[i]![r * classes + k]!;
        assert.ok(
          Math.abs(z - scored) < 1e-4 * Math.max(1, Math.abs(z)),
          `C ${c[i]} row ${r} class ${k}: ${z} vs ${scored}`,
        );
      }
    }
  }
  return fits;
}

describe("the L-BFGS probe against scikit-learn's LogisticRegression", () => {
  const mm = new MatMul();
  after(() => mm.dispose());

  it('more rows than dimensions: the same solution for every C of a grid solved together', { skip }, async () => {
    const fits = await compare(data(60, 8, 3, 1), 3, [0.1, 1, 100], false, mm);
    assert.equal(fits.basis.kind, 'features');
    assert.ok(fits.runs.every((r) => r.stopped !== 'iterations'));
  });

  it(
    "fewer rows than dimensions: solved in the rows' span (30 rows × 200 dims → 30 coordinates), the same full kernel",
    { skip },
    async () => {
      const fits = await compare(data(30, 200, 4, 2, 2), 4, [0.01, 1, 1000], false, mm);
      assert.equal(fits.basis.kind, 'rows');
      assert.equal(fits.coords, 30);
    },
  );

  it('duplicate rows (a rank-deficient Gram matrix) and balanced class weights', { skip }, async () => {
    const d = data(0, 50, 3, 3, 1.5, [12, 5, 3]);
    // Rows 0-3 repeated at 4-7: the Gram matrix loses four ranks.
    d.x.set(d.x.subarray(0, 4 * 50), 4 * 50);
    const fits = await compare(d, 3, [0.5, 50], true, mm);
    assert.equal(fits.basis.kind, 'rows');
    assert.equal(fits.coords, 16);
  });

  it('C values solved in consecutive groups (a memory cap) give the same solutions as all in lock step', async () => {
    const d = data(40, 12, 3, 4);
    const problem = [
      { features: d.x, count: d.n, dim: d.dim },
      { labels: d.labels, classes: 3, rowWeights: weightsOf(d.labels, 3, false) },
    ] as const;
    const together = await fitProbes(...problem, [0.1, 1, 10], mm);
    // Room for one problem at a time.
    const grouped = await fitProbes(...problem, [0.1, 1, 10], mm, {}, (12 * 3 + 3) * 8 * 26);
    assert.deepEqual(grouped.solutions, together.solutions);
    assert.deepEqual(
      grouped.runs.map((r) => r.iterations),
      together.runs.map((r) => r.iterations),
    );
  });

  it(
    "two classes: C is scikit-learn's default binary model's C (one vector w = W₁ − W₀), not the multinomial one's",
    { skip },
    async () => {
      const d = data(50, 6, 2, 7, 2);
      const c = [0.05, 1];
      const fits = await fitProbes(
        { features: d.x, count: d.n, dim: d.dim },
        { labels: d.labels, classes: 2, rowWeights: weightsOf(d.labels, 2, false) },
        c,
        mm,
        { gradientTolerance: 1e-9, relativeDecrease: 0, maxIterations: 5000 },
      );
      const logits = await probeLogits(fits, { features: d.test, count: 20, dim: d.dim }, mm);
      const binary = sklearn(d, c, null, 'auto');
      const multinomial = sklearn(d, c, null, 'multinomial');
      const worst = (i: number, ref: { proba: number[][] }) =>
        Math.max(...ref.proba.flat().map((p, j) => Math.abs(p - softmaxRows(logits[i]!, 2)[j]!)));
      for (let i = 0; i < c.length; i++)
        assert.ok(worst(i, binary[i]!) < 1e-4, `C ${c[i]}: ${worst(i, binary[i]!)} from scikit-learn's binary model`);
      // The comparison can tell the two apart: at C 0.05 the multinomial model with the same C regularises half as hard.
      assert.ok(worst(0, multinomial[0]!) > 1e-3, `C ${c[0]}: indistinguishable from the multinomial C`);
    },
  );

  it("C maps to the L2 strength of the mean loss as scikit-learn's does: λ = 1/(C·n), 2/(C·n) for two classes", () => {
    assert.equal(l2Strength(10, 50, 3), 1 / 500);
    assert.equal(l2Strength(Infinity, 50, 3), 0);
    assert.equal(cForStrength(l2Strength(10, 50, 3), 50, 3), 10);
    assert.equal(cForStrength(l2Strength(10, 50, 2), 50, 2), 10);
    assert.equal(cForStrength(0, 50, 2), Infinity);
  });
});
