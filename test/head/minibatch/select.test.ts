import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { type Tf, loadTf } from '../../../src/head/runtime.js';
import {
  KFOLD,
  MIN_HOLDOUT_ROWS,
  TEMPERATURE_PRIOR,
  conflictingDuplicates,
  duplicateGroups,
  planSelection,
} from '../../../src/head/plan.js';
import { type MinibatchRow, selectSetting, sweepEpochBudget } from '../../../src/head/minibatch/select.js';
import { sweepCurves } from '../../../src/head/minibatch/sweep.js';
import { DEFAULT_HEAD_OPTIONS, type HeadOptions, type Split } from '../../../src/head/model.js';
import { fitHead, predictLogits } from '../../../src/head/minibatch/train.js';
import { seededRandom } from '../../../src/util/random.js';

function clusters(count: number, dim: number, classes: number, noise: number, seed: number): Split {
  const random = seededRandom(seed);
  const centres = Float32Array.from({ length: classes * dim }, () => random() * 2 - 1);
  const labels = Int32Array.from({ length: count }, (_, i) => i % classes);
  const features = Float32Array.from(
    { length: count * dim },
    (_, i) => centres[labels[Math.floor(i / dim)]! * dim + (i % dim)]! + (random() * 2 - 1) * noise,
  );
  return { features, labels, count };
}

const keys = (n: number) => Array.from({ length: n }, (_, i) => `img${i}.jpg`);
const names = ['a', 'b', 'c', 'd'];

/** The hold-out plan's held rows (asserted elsewhere to be a hold-out, disjoint from the fit rows). */
function heldRowsOf(labels: Int32Array, n: number, seed: number): number[] {
  const plan = planSelection(labels, keys(n), names, 0.2, seed);
  assert.ok(typeof plan !== 'string' && plan.method === 'holdout');
  return plan.folds[0]!.held;
}

/** Rows `rows` of `split`, normalised here (none, or each row over its Euclidean length). */
function plainRows(split: Split, rows: number[], dim: number, kind: string): Split {
  const features = new Float32Array(rows.length * dim);
  rows.forEach((r, k) => {
    const x = Array.from(split.features.subarray(r * dim, (r + 1) * dim));
    const scale = kind === 'l2' ? 1 / Math.hypot(...x) : 1;
    assert.ok(kind === 'l2' || kind === 'none', kind);
    x.forEach((v, d) => (features[k * dim + d] = v * scale));
  });
  return { features, labels: Int32Array.from(rows, (r) => split.labels[r]!), count: rows.length };
}

/** The chosen setting fitted on every row but `held` (the complement, computed here), then its logits on `held`. */
function refitHeldLogits(tf: Tf, train: Split, held: number[], chosen: MinibatchRow, options: HeadOptions) {
  const heldSet = new Set(held);
  const fitRows = [...Array(train.count).keys()].filter((r) => !heldSet.has(r));
  const fit = plainRows(train, fitRows, 6, chosen.normalize);
  const heldSplit = plainRows(train, held, 6, chosen.normalize);
  const o = { ...options, lr: chosen.lr, weightDecay: chosen.weightDecay, epochs: chosen.epoch };
  const result = fitHead(tf, fit, null, 6, 3, o, { selectOnVal: false });
  return predictLogits(tf, result.layers, heldSplit.features, heldSplit.count);
}

/** Mean NLL of softmax(z / t), written out. */
function plainNll(logits: Float32Array, labels: Int32Array, classes: number, t: number): number {
  let sum = 0;
  labels.forEach((y, r) => {
    const z = Array.from(logits.subarray(r * classes, (r + 1) * classes), (v) => v / t);
    const m = Math.max(...z);
    sum += m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0)) - z[y]!;
  });
  return sum / labels.length;
}

describe('selection plan', () => {
  it('holds out a stratified, seeded share of train when it is large enough', () => {
    const labels = Int32Array.from({ length: 400 }, (_, i) => i % 4);
    const plan = planSelection(labels, keys(400), names, 0.2, 0);
    assert.ok(typeof plan !== 'string' && plan.method === 'holdout');
    const [fold] = plan.folds;
    assert.equal(fold!.held.length, 80);
    assert.deepEqual(
      [0, 1, 2, 3].map((c) => fold!.held.filter((r) => labels[r] === c).length),
      [20, 20, 20, 20],
    );
    assert.equal(new Set([...fold!.fit, ...fold!.held]).size, 400);
    assert.deepEqual(planSelection(labels, keys(400), names, 0.2, 0), plan, 'seeded');
    assert.notDeepEqual((planSelection(labels, keys(400), names, 0.2, 1) as typeof plan).folds[0]!.held, fold!.held);
  });

  it('falls back to stratified k-fold when the hold-out is too small, and says why', () => {
    const labels = Int32Array.from({ length: 40 }, (_, i) => i % 4);
    const plan = planSelection(labels, keys(40), names, 0.2, 0);
    assert.ok(typeof plan !== 'string' && plan.method === 'kfold');
    assert.equal(plan.folds.length, KFOLD);
    assert.match(
      plan.notes.join('\n'),
      new RegExp(`would have 8 rows \\(fewer than ${MIN_HOLDOUT_ROWS}.*${KFOLD}-fold`),
    );
    const heldOnce = plan.folds.flatMap((f) => f.held).sort((a, b) => a - b);
    assert.deepEqual(heldOnce, [...Array(40).keys()], 'every row held out exactly once');
    for (const f of plan.folds) assert.equal(f.fit.length + f.held.length, 40);
  });

  it('a class with one image is trained on, never held out, and named; with no class of two, it says so', () => {
    const labels = Int32Array.from([0, 0, 0, 1, 1, 1, 2]);
    const plan = planSelection(labels, keys(7), ['a', 'b', 'lonely'], 0.2, 0);
    assert.ok(typeof plan !== 'string');
    assert.match(plan.notes[0]!, /class "lonely" has one distinct training image: it cannot be held out/);
    for (const f of plan.folds) assert.ok(f.fit.includes(6) && !f.held.includes(6));
    const none = planSelection(Int32Array.from([0, 1, 2]), keys(3), ['a', 'b', 'c'], 0.2, 0);
    assert.equal(typeof none, 'string');
    assert.match(none as string, /no class has two distinct training images/);
  });

  it('keeps duplicate images (identical features) on the same side', () => {
    const split = clusters(200, 4, 2, 0.5, 1);
    for (let r = 100; r < 200; r += 2) {
      split.features.copyWithin(r * 4, (r - 100) * 4, (r - 99) * 4);
      split.labels[r] = split.labels[r - 100]!;
    }
    const groups = duplicateGroups(split, 4);
    assert.equal(groups[150], 50);
    const plan = planSelection(split.labels, keys(200), names, 0.2, 0, groups);
    assert.ok(typeof plan !== 'string');
    const held = new Set(plan.folds[0]!.held);
    for (let r = 100; r < 200; r += 2) assert.equal(held.has(r), held.has(r - 100), `row ${r} and its copy ${r - 100}`);
  });

  it('the same picture under two labels is two images, one per class, and is counted as a conflict', () => {
    const split = clusters(40, 4, 2, 0.5, 2);
    // Row 1 (class 1) becomes a copy of row 0 (class 0); row 2 (class 0) an exact duplicate of row 0.
    split.features.copyWithin(4, 0, 4);
    split.features.copyWithin(8, 0, 4);
    assert.deepEqual([split.labels[0], split.labels[1], split.labels[2]], [0, 1, 0]);
    const groups = duplicateGroups(split, 4);
    assert.equal(groups[2], 0, 'same label: one group');
    assert.equal(groups[1], 1, 'another label: its own group');
    assert.equal(conflictingDuplicates(split, 4), 3, 'rows 0, 1 and 2 share features across two labels');
    assert.equal(conflictingDuplicates(clusters(40, 4, 2, 0.5, 2), 4), 0);
  });

  it('a class with fewer images than folds makes fewer folds, and the note says how many', () => {
    const labels = Int32Array.from({ length: 12 }, (_, i) => i % 4);
    const plan = planSelection(labels, keys(12), names, 0.2, 0);
    assert.ok(typeof plan !== 'string' && plan.method === 'kfold');
    assert.equal(plan.folds.length, 3);
    assert.match(
      plan.notes.join('\n'),
      new RegExp(`selecting by stratified 3-fold instead \\(not ${KFOLD}: the largest class has 3 distinct images\\)`),
    );
  });
});

describe('selection plan: what the hold-out and the folds may not do', () => {
  it('hold-out (> 90 rows): fit and held are disjoint and cover train; held rows are never fit rows', () => {
    for (const [n, fraction] of [
      [100, 0.5],
      [300, 0.2],
      [401, 0.2],
    ] as const) {
      const labels = Int32Array.from({ length: n }, (_, i) => i % 3);
      const plan = planSelection(labels, keys(n), names, fraction, 0);
      assert.ok(typeof plan !== 'string' && plan.method === 'holdout', `${n} rows`);
      assert.equal(plan.folds.length, 1);
      const { fit, held } = plan.folds[0]!;
      const heldSet = new Set(held);
      assert.deepEqual(
        fit.filter((r) => heldSet.has(r)),
        [],
        `${n} rows: no held row is fitted`,
      );
      assert.equal(fit.length + held.length, n, `${n} rows: each row on exactly one side`);
      assert.deepEqual(
        [...fit, ...held].sort((a, b) => a - b),
        [...Array(n).keys()],
      );
      assert.ok(Math.abs(held.length - fraction * n) <= 3, `${n} rows: ${held.length} held, about ${fraction * n}`);
    }
  });

  it('hold-out: duplicate images (one group) land on one side, all of them', () => {
    const n = 400;
    const labels = Int32Array.from({ length: n }, (_, i) => i % 4);
    // In each block of 12 rows, rows 4–7 and 8–11 are copies of rows 0–3 (same label): groups of three.
    const groups = Int32Array.from({ length: n }, (_, r) => r - 4 * Math.floor((r % 12) / 4));
    const plan = planSelection(labels, keys(n), names, 0.2, 0, groups);
    assert.ok(typeof plan !== 'string' && plan.method === 'holdout');
    const { fit, held } = plan.folds[0]!;
    const side = new Map<number, Set<string>>();
    for (const [rows, name] of [
      [fit, 'fit'],
      [held, 'held'],
    ] as const)
      for (const r of rows) side.set(groups[r]!, (side.get(groups[r]!) ?? new Set()).add(name));
    const split = [...side].filter(([, s]) => s.size > 1).map(([g]) => g);
    assert.deepEqual(split, [], 'groups on both sides');
    const heldGroups = new Set(held.map((r) => groups[r]!));
    assert.ok(
      [...heldGroups].some((g) => held.filter((r) => groups[r] === g).length > 1),
      'a held group of copies',
    );
    assert.equal(new Set([...fit, ...held]).size, n);
    assert.equal(fit.length + held.length, n);
  });

  it('k-fold is stratified: every class in every fold, each within one row of its share', () => {
    // Classes of 13, 7, 5 and 10 rows: 35 rows, a 20% hold-out of 7 is too small.
    const sizes = [13, 7, 5, 10];
    const labels = Int32Array.from(sizes.flatMap((size, c) => new Array<number>(size).fill(c)));
    const plan = planSelection(labels, keys(labels.length), names, 0.2, 3);
    assert.ok(typeof plan !== 'string' && plan.method === 'kfold');
    assert.equal(plan.folds.length, KFOLD);
    for (const [k, fold] of plan.folds.entries()) {
      sizes.forEach((size, c) => {
        const heldOfClass = fold.held.filter((r) => labels[r] === c).length;
        assert.ok(
          heldOfClass === Math.floor(size / KFOLD) || heldOfClass === Math.ceil(size / KFOLD),
          `fold ${k}, class ${c}: ${heldOfClass} of ${size} held`,
        );
        assert.ok(
          fold.fit.some((r) => labels[r] === c),
          `fold ${k} fits class ${c}`,
        );
      });
      const heldSet = new Set(fold.held);
      assert.ok(
        fold.fit.every((r) => !heldSet.has(r)),
        `fold ${k}: fit and held disjoint`,
      );
    }
  });
});

describe('sweep', () => {
  let tf: Tf;
  before(async () => {
    tf = (await loadTf('auto')).tf;
  });
  const fit = clusters(120, 6, 3, 1.2, 2);
  const held = clusters(60, 6, 3, 1.2, 3);
  const options: HeadOptions = { ...DEFAULT_HEAD_OPTIONS, epochs: 6, batchSize: 16 };

  it('each column of the wide pass is exactly fitHead with that setting (same init, shuffles, optimiser), on both engines', async () => {
    const candidates = [
      { lr: 0.003, weightDecay: 0 },
      { lr: 0.03, weightDecay: 0.01 },
      { lr: 0.1, weightDecay: 0.001 },
    ];
    for (const [optimizer, engine, stepSize] of [
      ['adam', 'tfjs', 0],
      ['sgd', 'tfjs', 0],
      ['adam', 'onnxruntime', 0],
      ['sgd', 'onnxruntime', 2],
    ] as const) {
      const o = { ...options, optimizer, stepSize, gamma: 0.5, classWeight: 'balanced' as const };
      const curves = await sweepCurves(tf, fit, held, 6, 3, candidates, o, { patience: 0, engine });
      assert.equal(curves.loss.length, 6);
      candidates.forEach((c, k) => {
        const alone = fitHead(tf, fit, held, 6, 3, { ...o, ...c }, { selectOnVal: false }).history;
        alone.forEach((h, e) => {
          assert.ok(
            Math.abs(h.valLoss! - curves.loss[e]![k]!) < 1e-4,
            `${optimizer}/${engine} candidate ${k} epoch ${e + 1}: ${h.valLoss} vs ${curves.loss[e]![k]}`,
          );
          assert.ok(
            Math.abs(h.valAcc! - curves.acc[e]![k]!) < 1e-6,
            `${optimizer}/${engine} candidate ${k} epoch ${e + 1} accuracy`,
          );
        });
      });
    }
  });

  it('selects on the hold-out of train, pins given values, and fits a temperature that lowers the held-out NLL', async () => {
    const train = clusters(300, 6, 3, 1.5, 4);
    const grid = { c: [], lr: [0.001, 0.03], weightDecay: [0, 0.01], normalize: ['none', 'l2'] as const };
    const s = await selectSetting(
      tf,
      train,
      6,
      3,
      { ...options, epochs: 8 },
      {
        grid: { ...grid, normalize: [...grid.normalize] },
        holdoutFraction: 0.2,
        patience: 0,
        keys: keys(300),
        classNames: names,
        log: () => {},
      },
    );
    assert.ok(typeof s !== 'string');
    assert.equal(s.table.length, 8);
    assert.equal(s.method, 'holdout');
    // Finalists: each normalisation's lowest held-out loss; the winner has the lowest calibrated loss among them.
    const finalists = s.table.filter((r) => r.calibratedLoss !== null);
    assert.equal(finalists.length, 2);
    for (const f of finalists)
      assert.equal(
        f.holdoutLoss,
        Math.min(...s.table.filter((r) => r.normalize === f.normalize).map((r) => r.holdoutLoss)),
      );
    assert.equal(s.chosen.calibratedLoss, Math.min(...finalists.map((f) => f.calibratedLoss!)));
    assert.equal(s.heldNll.after, s.chosen.calibratedLoss);
    assert.ok(s.heldNll.after <= s.heldNll.before + 1e-9);
    // Recomputed apart from the sweep: the chosen setting fitted on the fit rows only (everything but the held
    // rows), its held-out NLL before and after the temperature, and the temperature the MAP optimum of that NLL.
    const held = heldRowsOf(train.labels, 300, DEFAULT_HEAD_OPTIONS.seed);
    const heldLogits = refitHeldLogits(tf, train, held, s.chosen, { ...options, epochs: 8 });
    const heldLabels = Int32Array.from(held, (r) => train.labels[r]!);
    const nll = (t: number) => plainNll(heldLogits, heldLabels, 3, t);
    assert.ok(Math.abs(s.heldNll.before - nll(1)) < 1e-4, `before: ${s.heldNll.before} vs refit ${nll(1)}`);
    assert.ok(
      Math.abs(s.heldNll.after - nll(s.temperature)) < 1e-4,
      `after: ${s.heldNll.after} vs ${nll(s.temperature)}`,
    );
    const map = (t: number) => nll(t) + (TEMPERATURE_PRIOR * Math.log(t) ** 2) / held.length;
    for (const step of [1.02, 1 / 1.02])
      assert.ok(map(s.temperature) <= map(s.temperature * step) + 1e-9, `T ${s.temperature} is the MAP optimum`);
    assert.notEqual(s.temperature, 1, 'the fixture needs a temperature, so this checks one');
    // onnxruntime keeps the held-out logits of every epoch and slices the finalists' out; tfjs refits them: same answer.
    const viaOrt = await selectSetting(
      tf,
      train,
      6,
      3,
      { ...options, epochs: 8 },
      {
        grid: { ...grid, normalize: [...grid.normalize] },
        holdoutFraction: 0.2,
        patience: 0,
        keys: keys(300),
        classNames: names,
        log: () => {},
        engine: 'onnxruntime',
      },
    );
    assert.ok(typeof viaOrt !== 'string');
    assert.deepEqual(
      [viaOrt.chosen.normalize, viaOrt.chosen.lr, viaOrt.chosen.weightDecay, viaOrt.chosen.epoch],
      [s.chosen.normalize, s.chosen.lr, s.chosen.weightDecay, s.chosen.epoch],
    );
    assert.ok(
      Math.abs(viaOrt.temperature - s.temperature) < 1e-3 * s.temperature,
      `${viaOrt.temperature} vs ${s.temperature}`,
    );
    const pinned = await selectSetting(
      tf,
      train,
      6,
      3,
      { ...options, epochs: 4 },
      {
        grid: { c: [], lr: [0.01], weightDecay: [0], normalize: ['l2'] },
        fixedEpochs: 4,
        holdoutFraction: 0.2,
        patience: 0,
        keys: keys(300),
        classNames: names,
        log: () => {},
      },
    );
    assert.ok(typeof pinned !== 'string');
    assert.deepEqual(
      [pinned.chosen.lr, pinned.chosen.weightDecay, pinned.chosen.normalize, pinned.chosen.epoch],
      [0.01, 0, 'l2', 4],
    );
  });

  it('gives tiny training sets at least minSteps optimiser steps (more epochs), and leaves larger or fixed runs alone', async () => {
    assert.equal(sweepEpochBudget(100, 24, 32, 300), 300, 'one step an epoch');
    assert.equal(sweepEpochBudget(100, 40, 32, 300), 150, 'two steps an epoch');
    assert.equal(sweepEpochBudget(100, 80, 32, 300), 100, 'three steps an epoch already make 300');
    assert.equal(sweepEpochBudget(100, 878, 32, 300), 100);
    // 30 rows: 5 folds of 24 fit rows, one mini-batch (one step) an epoch.
    const train = clusters(30, 6, 3, 1.5, 5);
    const lines: string[] = [];
    const run = async (minSteps: number, fixedEpochs?: number) => {
      const s = await selectSetting(
        tf,
        train,
        6,
        3,
        { ...options, epochs: 4, batchSize: 32 },
        {
          grid: { c: [], lr: [0.01], weightDecay: [0], normalize: ['none'] },
          fixedEpochs,
          holdoutFraction: 0.2,
          patience: 0,
          keys: keys(30),
          classNames: names,
          log: (l) => lines.push(l),
          minSteps,
        },
      );
      assert.ok(typeof s !== 'string' && s.method === 'kfold');
      return s;
    };
    const plain = await run(0);
    const budgeted = await run(12);
    // The sweep's arithmetic is proportional to the epochs run: 12 steps = 12 epochs, three times the 4 asked for.
    assert.ok(Math.abs(budgeted.gflops / plain.gflops - 3) < 1e-9, `${budgeted.gflops} vs ${plain.gflops}`);
    assert.ok(budgeted.chosen.epoch <= 12);
    assert.ok(
      lines.some((l) => l.includes('up to 12 epochs (at least 12 optimiser steps)')),
      lines.join('\n'),
    );
    const fixed = await run(12, 4);
    assert.equal(fixed.gflops, plain.gflops, 'epochs the user fixed are not extended');
    assert.equal(fixed.chosen.epoch, 4);
  });
});
