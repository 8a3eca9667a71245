import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MatMul } from '../../../src/head/probe/linalg.js';
import {
  NORMALIZATION_PREFERENCE,
  chooseCandidate,
  OUT_OF_FOLD_K,
  fitProbeHead,
  outOfFoldTemperature,
  pairedDifference,
  selectProbe,
} from '../../../src/head/probe/select.js';
import { l2Strength } from '../../../src/head/probe/probe.js';
import { fitTemperature, temperatureNll } from '../../../src/head/metrics.js';
import { type SweepRow, TEMPERATURE_PRIOR, planSelection } from '../../../src/head/plan.js';
import type { Split } from '../../../src/head/model.js';
import { labelledClusters } from '../../support/synthetic-rows.js';
import { seededRandom } from '../../../src/util/random.js';

function row(normalize: SweepRow['normalize'], c: number, calibratedLoss: number, holdoutAcc = 0.9): SweepRow {
  return {
    normalize,
    c,
    lr: null,
    weightDecay: 0,
    epoch: null,
    holdoutLoss: calibratedLoss,
    holdoutAcc,
    calibratedLoss,
  };
}

/** Per-row losses with a chosen mean and spread (the spread sets the standard error of a paired difference). */
function losses(meanValue: number, spread: number, n = 100): Float64Array {
  return Float64Array.from({ length: n }, (_, i) => meanValue + (i % 2 === 0 ? spread : -spread));
}

/** Clusters offset by 3 (off the origin). */
const clusters = (count: number, dim: number, classes: number, noise: number, seed: number): Split =>
  labelledClusters(count, dim, classes, noise, seed, 3);

/** Rows `rows` of `split`, normalised here: none, or each row over its Euclidean length. */
function plainRows(split: Split, rows: number[], dim: number, kind: string): Split {
  assert.ok(kind === 'l2' || kind === 'none', kind);
  const features = new Float32Array(rows.length * dim);
  rows.forEach((r, k) => {
    const x = Array.from(split.features.subarray(r * dim, (r + 1) * dim));
    const scale = kind === 'l2' ? 1 / Math.hypot(...x) : 1;
    x.forEach((v, d) => (features[k * dim + d] = v * scale));
  });
  return { features, labels: Int32Array.from(rows, (r) => split.labels[r]!), count: rows.length };
}

/** Held-out accuracy and mean NLL (T = 1) of one dense layer, written out in float64. */
function heldScores(layer: { kernel: Float32Array; bias: Float32Array }, held: Split, dim: number, classes: number) {
  let right = 0;
  let nll = 0;
  for (let r = 0; r < held.count; r++) {
    const z = Array.from({ length: classes }, (_, k) => {
      let v = layer.bias[k]!;
      for (let j = 0; j < dim; j++) v += held.features[r * dim + j]! * layer.kernel[j * classes + k]!;
      return v;
    });
    const m = Math.max(...z);
    nll += m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0)) - z[held.labels[r]!]!;
    if (z.indexOf(m) === held.labels[r]) right++;
  }
  return { acc: right / held.count, nll: nll / held.count };
}

describe('choosing the probe: the one-standard-error rule', () => {
  it('a candidate within one paired standard error of the best is a tie, and ties go to the preferred normalisation', () => {
    assert.deepEqual(NORMALIZATION_PREFERENCE, ['l2', 'none', 'standard']);
    const best = { row: row('none', 10, 0.5), perRow: losses(0.5, 0) };
    // l2 is worse by 0.01 on average, but its per-row differences swing by ±0.3: SE 0.03, a tie.
    const noisy = { row: row('l2', 1, 0.51), perRow: Float64Array.from(losses(0.51, 0.3)) };
    const chosen = chooseCandidate([best, noisy], 'val_loss');
    assert.equal(chosen, noisy);
    assert.equal(best.row.tied, true);
    assert.equal(noisy.row.tied, true);
  });

  it('the paired difference: mean and standard error of a − b row by row (sample variance / n)', () => {
    const d = pairedDifference(Float64Array.of(2, 4, 6, 8), Float64Array.of(1, 2, 3, 4));
    // Differences 1, 2, 3, 4: mean 2.5, sample variance 5/3, standard error √(5/12).
    assert.equal(d.mean, 2.5);
    assert.ok(Math.abs(d.se - Math.sqrt(5 / 12)) < 1e-15, `${d.se}`);
    assert.deepEqual(
      pairedDifference(Float64Array.of(3), Float64Array.of(1)),
      { mean: 2, se: 0 },
      'one row: no spread to measure',
    );
  });

  it('a candidate worse by more than its standard error is not a tie: the best stays', () => {
    const best = { row: row('none', 10, 0.5), perRow: losses(0.5, 0) };
    const worse = { row: row('l2', 1, 0.6), perRow: losses(0.6, 0.05) };
    assert.equal(chooseCandidate([worse, best], 'val_loss'), best);
    assert.equal(worse.row.tied, false);
  });

  it('among ties of one normalisation the lower calibrated loss wins; monitor val_acc puts held-out accuracy first', () => {
    const a = { row: row('l2', 1, 0.52, 0.95), perRow: losses(0.52, 0.4) };
    const b = { row: row('l2', 100, 0.5, 0.9), perRow: losses(0.5, -0.4) };
    assert.equal(chooseCandidate([a, b], 'val_loss'), b);
    assert.equal(chooseCandidate([a, b], 'val_acc'), a);
  });
});

describe('selectProbe and the final fit', () => {
  const mm = new MatMul();
  after(() => mm.dispose());
  const names = ['a', 'b', 'c'];

  it('scores every C × normalisation on folds of train, skips standardisation with fewer rows than dimensions, and is deterministic', async () => {
    const train = clusters(45, 60, 3, 1.2, 3);
    const keys = Array.from({ length: 45 }, (_, i) => `img${i}.jpg`);
    const lines: string[] = [];
    const options = {
      grid: { c: [0.1, 10], normalize: ['none', 'l2', 'standard'] as const },
      holdoutFraction: 0.2,
      seed: 0,
      classWeight: 'none' as const,
      monitor: 'val_loss' as const,
      keys,
      classNames: names,
      log: (l: string) => lines.push(l),
    };
    const s = await selectProbe(
      train,
      60,
      3,
      { ...options, grid: { ...options.grid, normalize: [...options.grid.normalize] } },
      mm,
    );
    assert.ok(typeof s !== 'string');
    assert.equal(s.method, 'kfold', '45 rows: a 20% hold-out has 9 rows');
    assert.equal(s.heldRows, 45, 'every row held out once');
    assert.deepEqual(
      s.table.map((r) => `${r.normalize}/${r.c}`),
      ['none/0.1', 'none/10', 'l2/0.1', 'l2/10'],
    );
    assert.match(s.skipped[0]!, /^standard: 36 rows per fit are fewer than the 60 dimensions/);
    assert.ok(lines.some((l) => l.includes('not sweeping standard')));
    assert.ok(
      s.table.every((r) => r.calibratedLoss! <= r.holdoutLoss + 1e-12),
      'a fitted temperature never raises the NLL',
    );
    // The chosen row is the tie the rule prefers: l2 before none (standard was skipped), then the lower NLL.
    const ties = s.table.filter((r) => r.tied);
    const preferred = ties.some((r) => r.normalize === 'l2') ? ties.filter((r) => r.normalize === 'l2') : ties;
    const best = Math.min(...s.table.map((r) => r.calibratedLoss!));
    assert.ok(
      s.table.some((r) => r.calibratedLoss === best && r.tied),
      'the best candidate is tied with itself',
    );
    assert.deepEqual(
      [s.chosen.normalize, s.chosen.c],
      [preferred[0]!.normalize, preferred.reduce((a, b) => (b.calibratedLoss! < a.calibratedLoss! ? b : a)).c],
    );
    assert.equal(s.heldNll.after, s.chosen.calibratedLoss);
    const again = await selectProbe(
      train,
      60,
      3,
      { ...options, grid: { ...options.grid, normalize: [...options.grid.normalize] } },
      mm,
    );
    assert.deepEqual(again, {
      ...s,
      seconds: (again as typeof s).seconds,
      gflopsPerSecond: (again as typeof s).gflopsPerSecond,
    });
  });

  it('held-out accuracy: 1 on well-separated classes, near chance on random labels; the notes are logged', async () => {
    const keys = Array.from({ length: 60 }, (_, i) => `img${i}.jpg`);
    const lines: string[] = [];
    const options = {
      grid: { c: [1], normalize: ['none' as const] },
      holdoutFraction: 0.2,
      seed: 0,
      classWeight: 'none' as const,
      monitor: 'val_loss' as const,
      keys,
      classNames: names,
      log: (l: string) => lines.push(l),
    };
    const separated = await selectProbe(clusters(60, 10, 3, 0.05, 8), 10, 3, options, mm);
    assert.ok(typeof separated !== 'string');
    assert.equal(separated.table[0]!.holdoutAcc, 1);
    assert.ok(
      lines.some((l) => /selecting by stratified 5-fold instead/.test(l)),
      lines.join('\n'),
    );
    const noise = clusters(60, 10, 3, 0.05, 9);
    const random = seededRandom(10);
    noise.features.forEach((_, i) => (noise.features[i] = random()));
    const chance = await selectProbe(noise, 10, 3, options, mm);
    assert.ok(typeof chance !== 'string');
    assert.ok(chance.table[0]!.holdoutAcc < 0.6, `${chance.table[0]!.holdoutAcc} on random features`);
  });

  it('a standardisation the user pinned is kept even with fewer rows than dimensions; an empty grid is refused', async () => {
    const train = clusters(45, 60, 3, 1.2, 3);
    const keys = Array.from({ length: 45 }, (_, i) => `img${i}.jpg`);
    const base = {
      holdoutFraction: 0.2,
      seed: 0,
      classWeight: 'none' as const,
      monitor: 'val_loss' as const,
      keys,
      classNames: names,
      log: () => {},
    };
    const pinned = await selectProbe(train, 60, 3, { ...base, grid: { c: [1], normalize: ['standard'] } }, mm);
    assert.ok(typeof pinned !== 'string');
    assert.deepEqual(pinned.skipped, []);
    assert.equal(pinned.chosen.normalize, 'standard');
    await assert.rejects(
      selectProbe(train, 60, 3, { ...base, grid: { c: [], normalize: ['none'] } }, mm),
      /the sweep grid is empty/,
    );
    await assert.rejects(
      selectProbe(train, 60, 3, { ...base, grid: { c: [1], normalize: [] } }, mm),
      /the sweep grid is empty/,
    );
  });

  it('with enough rows, standardisation is swept too', async () => {
    const train = clusters(90, 8, 3, 1.5, 4);
    const keys = Array.from({ length: 90 }, (_, i) => `img${i}.jpg`);
    const s = await selectProbe(
      train,
      8,
      3,
      {
        grid: { c: [1], normalize: ['none', 'standard'] },
        holdoutFraction: 0.2,
        seed: 0,
        classWeight: 'none',
        monitor: 'val_loss',
        keys,
        classNames: names,
        log: () => {},
      },
      mm,
    );
    assert.ok(typeof s !== 'string');
    assert.deepEqual(s.skipped, []);
    assert.deepEqual(
      s.table.map((r) => r.normalize),
      ['none', 'standard'],
    );
  });

  it('hold-out (300 noisy rows): every candidate is scored by a fit on the fit rows only, as refitted here', async () => {
    const [n, dim] = [300, 30];
    // Noisy clusters: held-out accuracy well below 1, so a fit that had seen the held rows would score higher.
    const train = clusters(n, dim, 3, 2.2, 11);
    const keys = Array.from({ length: n }, (_, i) => `img${i}.jpg`);
    const grid = { c: [0.1, 100], normalize: ['none', 'l2'] as const };
    const s = await selectProbe(
      train,
      dim,
      3,
      {
        grid: { ...grid, normalize: [...grid.normalize] },
        holdoutFraction: 0.2,
        seed: 0,
        classWeight: 'none',
        monitor: 'val_loss',
        keys,
        classNames: names,
        log: () => {},
      },
      mm,
    );
    assert.ok(typeof s !== 'string');
    assert.equal(s.method, 'holdout');
    assert.equal(s.folds, 1);
    const plan = planSelection(train.labels, keys, names, 0.2, 0);
    assert.ok(typeof plan !== 'string' && plan.method === 'holdout');
    const held = plan.folds[0]!.held;
    assert.equal(s.heldRows, held.length);
    // The fit rows are everything else, taken here rather than from the plan.
    const heldSet = new Set(held);
    const fitRows = [...Array(n).keys()].filter((r) => !heldSet.has(r));
    assert.equal(fitRows.length + held.length, n);
    for (const row of s.table) {
      const fit = plainRows(train, fitRows, dim, row.normalize);
      const heldSplit = plainRows(train, held, dim, row.normalize);
      const head = await fitProbeHead(fit, dim, 3, 'none', row.c!, 'none', mm);
      const expected = heldScores(head.layers[0]!, heldSplit, dim, 3);
      const what = `${row.normalize}/C ${row.c}`;
      assert.ok(Math.abs(row.holdoutLoss - expected.nll) < 1e-3, `${what}: NLL ${row.holdoutLoss} vs ${expected.nll}`);
      assert.ok(
        Math.abs(row.holdoutAcc - expected.acc) <= 1 / held.length + 1e-12,
        `${what}: accuracy ${row.holdoutAcc} vs ${expected.acc}`,
      );
      assert.ok(expected.acc < 0.95, `${what}: ${expected.acc} held out, a set where a leak would show`);
    }
  });

  it('says why when nothing can be held out', async () => {
    const train = clusters(3, 4, 3, 1, 5);
    const s = await selectProbe(
      train,
      4,
      3,
      {
        grid: { c: [1], normalize: ['none'] },
        holdoutFraction: 0.2,
        seed: 0,
        classWeight: 'none',
        monitor: 'val_loss',
        keys: ['x', 'y', 'z'],
        classNames: names,
        log: () => {},
      },
      mm,
    );
    assert.equal(typeof s, 'string');
    assert.match(s as string, /no class has two distinct training images/);
  });

  it('the final fit is one dense layer on normalised features that separates the training clusters', async () => {
    const train = clusters(60, 20, 3, 0.5, 6);
    const head = await fitProbeHead(train, 20, 3, 'l2', 100, 'none', mm);
    assert.equal(head.layers.length, 1);
    assert.deepEqual(head.layers[0]!.shape, [20, 3]);
    assert.equal(head.normalization.kind, 'l2');
    let right = 0;
    for (let r = 0; r < 60; r++) {
      const x = train.features.subarray(r * 20, (r + 1) * 20);
      const norm = Math.hypot(...x);
      const z = [0, 1, 2].map(
        (k) => head.layers[0]!.bias[k]! + x.reduce((s, v, j) => s + (v / norm) * head.layers[0]!.kernel[j * 3 + k]!, 0),
      );
      if (z.indexOf(Math.max(...z)) === train.labels[r]) right++;
    }
    assert.ok(right >= 57, `${right}/60 training rows right`);
    assert.notEqual(head.stopped, 'iterations');
    // Balanced class weights give the rare class more probability mass than unweighted training does.
    const skewed = clusters(90, 20, 3, 2.5, 7);
    const rows = [...Array(90).keys()].filter((r) => skewed.labels[r] !== 2 || r < 15);
    const unbalanced = {
      features: Float32Array.from(rows.flatMap((r) => [...skewed.features.subarray(r * 20, (r + 1) * 20)])),
      labels: Int32Array.from(rows, (r) => skewed.labels[r]!),
      count: rows.length,
    };
    const rareMass = async (classWeight: 'none' | 'balanced') => {
      const layer = (await fitProbeHead(unbalanced, 20, 3, 'none', 0.1, classWeight, mm)).layers[0]!;
      let mass = 0;
      for (let r = 0; r < unbalanced.count; r++) {
        const z = [0, 1, 2].map(
          (k) =>
            layer.bias[k]! +
            unbalanced.features.subarray(r * 20, (r + 1) * 20).reduce((s, v, j) => s + v * layer.kernel[j * 3 + k]!, 0),
        );
        const e = z.map((v) => Math.exp(v - Math.max(...z)));
        mass += e[2]! / (e[0]! + e[1]! + e[2]!) / unbalanced.count;
      }
      return mass;
    };
    const [plainMass, balancedMass] = [await rareMass('none'), await rareMass('balanced')];
    assert.ok(balancedMass > plainMass * 1.2, `rare class mass ${balancedMass} (balanced) vs ${plainMass}`);
  });
});

/** Logits [rows, classes] of one dense layer, in float64 then rounded to float32 as the probe's are. */
function plainLogits(layer: { kernel: Float32Array; bias: Float32Array }, rows: Split, dim: number, classes: number) {
  const out = new Float32Array(rows.count * classes);
  for (let r = 0; r < rows.count; r++)
    for (let k = 0; k < classes; k++) {
      let v = layer.bias[k]!;
      for (let j = 0; j < dim; j++) v += rows.features[r * dim + j]! * layer.kernel[j * classes + k]!;
      out[r * classes + k] = v;
    }
  return out;
}

describe('the out-of-fold temperature (the refit ships with it)', () => {
  const mm = new MatMul();
  after(() => mm.dispose());
  const names = ['a', 'b', 'c'];
  const options = (n: number) => ({
    seed: 0,
    keys: Array.from({ length: n }, (_, i) => `img${i}.jpg`),
    classNames: names,
    classWeight: 'none' as const,
  });

  it('k fold models at the refit λ each predict the rows they never saw; T is fitted on the pooled logits', async () => {
    const [n, dim, c] = [150, 20, 10];
    const train = clusters(n, dim, 3, 2.2, 5);
    const o = await outOfFoldTemperature(train, dim, 3, 'none', c, options(n), mm);
    assert.ok(typeof o !== 'string', typeof o === 'string' ? o : '');
    // 150 rows would give a hold-out to the sweep; the temperature still gets k folds.
    const plan = planSelection(train.labels, options(n).keys, names, 0.2, 0, undefined, OUT_OF_FOLD_K);
    assert.ok(typeof plan !== 'string');
    assert.equal(plan.method, 'kfold');
    assert.equal(o.folds, OUT_OF_FOLD_K);
    assert.equal(o.rows, n, 'every row predicted once');
    assert.equal(o.lambda, l2Strength(c, n, 3));
    // The reference: each fold refitted here, at C scaled so that λ = 1/(C·n) is the refit's.
    const logits: Float32Array[] = [];
    const labels: number[] = [];
    for (const fold of plan.folds) {
      assert.ok(
        fold.held.every((r) => !fold.fit.includes(r)),
        'a held row is never a fit row',
      );
      const fit = plainRows(train, fold.fit, dim, 'none');
      const head = await fitProbeHead(fit, dim, 3, 'none', (c * n) / fold.fit.length, 'none', mm);
      logits.push(plainLogits(head.layers[0]!, plainRows(train, fold.held, dim, 'none'), dim, 3));
      labels.push(...fold.held.map((r) => train.labels[r]!));
    }
    const pooled = new Float32Array(logits.reduce((s, l) => s + l.length, 0));
    logits.reduce((at, l) => (pooled.set(l, at), at + l.length), 0);
    const y = Int32Array.from(labels);
    const t = fitTemperature(pooled, y, 3, TEMPERATURE_PRIOR);
    assert.ok(Math.abs(o.fitted - t) < 1e-3, `T ${o.fitted} vs ${t}`);
    assert.ok(Math.abs(o.nll.before - temperatureNll(pooled, y, 3, 1)) < 1e-4, `${o.nll.before}`);
    // Shipped only when it beats T = 1 by more than one standard error.
    assert.equal(o.temperature, o.gain.mean > o.gain.se ? o.fitted : 1);
    assert.ok(o.nll.after <= o.nll.before + 1e-12);
  });

  it('a temperature that does not beat T = 1 out of fold by one standard error is not shipped', async () => {
    const [n, dim] = [120, 10];
    const random = seededRandom(7);
    // Labels independent of the features: no temperature helps beyond noise.
    const train = clusters(n, dim, 3, 1, 7);
    train.labels = Int32Array.from({ length: n }, () => Math.floor(random() * 3));
    const o = await outOfFoldTemperature(train, dim, 3, 'none', 0.01, options(n), mm);
    assert.ok(typeof o !== 'string', typeof o === 'string' ? o : '');
    assert.ok(o.gain.mean <= o.gain.se, `gain ${o.gain.mean} ± ${o.gain.se}`);
    assert.equal(o.temperature, 1);
    assert.equal(o.nll.after, o.nll.before);
  });

  it('says why when nothing can be held out', async () => {
    const train = clusters(3, 4, 3, 0.1, 1);
    const o = await outOfFoldTemperature(train, 4, 3, 'l2', 1, options(3), mm);
    assert.equal(typeof o, 'string');
  });
});
