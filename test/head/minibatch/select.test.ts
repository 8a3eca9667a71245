import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { type Tf, loadTf } from '../../../src/head/runtime.js';
import { TEMPERATURE_PRIOR, planSelection } from '../../../src/head/plan.js';
import { type MinibatchRow, selectSetting, sweepEpochBudget } from '../../../src/head/minibatch/select.js';
import { sweepCurves } from '../../../src/head/minibatch/sweep.js';
import { DEFAULT_HEAD_OPTIONS, type HeadOptions, type Split } from '../../../src/head/model.js';
import { fitHead, predictLogits } from '../../../src/head/minibatch/train.js';
import { labelledClusters } from '../../support/synthetic-rows.js';

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

describe('sweep', () => {
  let tf: Tf;
  before(async () => {
    tf = (await loadTf('auto')).tf;
  });
  const fit = labelledClusters(120, 6, 3, 1.2, 2);
  const held = labelledClusters(60, 6, 3, 1.2, 3);
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
    const train = labelledClusters(300, 6, 3, 1.5, 4);
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
    const train = labelledClusters(30, 6, 3, 1.5, 5);
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
