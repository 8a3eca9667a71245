import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { type Tf, loadTf } from '../../../src/head/runtime.js';
import { DEFAULT_HEAD_OPTIONS, type HeadOptions, type Split, balancedClassWeights } from '../../../src/head/model.js';
import { initValues, predictProbabilities, stepLr, fitHead as trainHead } from '../../../src/head/minibatch/train.js';
import { repoRoot } from '../../support/helpers.js';
import { seededRandom } from '../../../src/util/random.js';

/** Gaussian clusters: `classes` centres in `dim` dimensions, `noise` spread. */
function clusters(count: number, dim: number, classes: number, noise: number, seed: number, weights?: number[]): Split {
  const random = seededRandom(seed);
  const centres = Float32Array.from({ length: classes * dim }, () => random() * 2 - 1);
  const w = weights ?? new Array<number>(classes).fill(1);
  const total = w.reduce((x, y) => x + y, 0);
  const cumulative = w.map((_, i) => w.slice(0, i + 1).reduce((x, y) => x + y, 0) / total);
  const labels = Int32Array.from({ length: count }, () => cumulative.findIndex((c) => random() <= c));
  const features = new Float32Array(count * dim);
  for (let r = 0; r < count; r++)
    for (let d = 0; d < dim; d++) features[r * dim + d] = centres[labels[r]! * dim + d]! + (random() * 2 - 1) * noise;
  return { features, labels, count };
}

const options = (over: Partial<HeadOptions> = {}): HeadOptions => ({
  ...DEFAULT_HEAD_OPTIONS,
  epochs: 5,
  batchSize: 16,
  ...over,
});
const flat = (r: ReturnType<typeof trainHead>) => [...r.layers[0]!.kernel];
const differs = (a: number[], b: number[]) => a.some((v, i) => Math.abs(v - b[i]!) > 1e-6);

describe('trainHead', () => {
  let tf: Tf;
  const train = clusters(200, 8, 3, 0.8, 1);
  const val = clusters(60, 8, 3, 0.8, 1);
  before(async () => {
    tf = (await loadTf('auto')).tf;
  });

  it('learns separable classes and reports per-epoch history', () => {
    const r = trainHead(tf, train, val, 8, 3, options({ epochs: 20, lr: 0.05 }));
    assert.equal(r.history.length, 20);
    assert.ok(r.history.at(-1)!.trainAcc > 0.9, `train acc ${r.history.at(-1)!.trainAcc}`);
    assert.ok(r.history.at(-1)!.valAcc! > 0.85);
    assert.ok(r.history.at(-1)!.trainLoss < r.history[0]!.trainLoss);
  });

  it('is reproducible with a seed, and the seed matters', () => {
    const a = trainHead(tf, train, val, 8, 3, options({ seed: 3 }));
    const b = trainHead(tf, train, val, 8, 3, options({ seed: 3 }));
    const c = trainHead(tf, train, val, 8, 3, options({ seed: 4 }));
    assert.deepEqual(flat(a), flat(b));
    assert.ok(differs(flat(a), flat(c)));
  });

  it('matches an independent numpy implementation of PyTorch Adam, SGD momentum, weight decay and StepLR', () => {
    // Fixture: test/head/fixtures/make_fit_reference.py (float64, same PRNG, init and shuffles, PyTorch definitions).
    const ref = JSON.parse(fs.readFileSync(path.join(repoRoot, 'test/head/fixtures/fit-reference.json'), 'utf8'));
    const data: Split = {
      features: Float32Array.from(ref.features),
      labels: Int32Array.from(ref.labels),
      count: ref.count,
    };
    for (const c of ref.cases) {
      const r = trainHead(tf, data, null, ref.dim, ref.classes, { ...DEFAULT_HEAD_OPTIONS, ...c.options });
      const got = [...r.layers[0]!.kernel, ...r.layers[0]!.bias];
      const want = [...c.kernel, ...c.bias] as number[];
      got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 2e-5, `${c.name}[${i}]: ${v} vs ${want[i]}`));
    }
  });

  it('each optimisation knob acts as defined (one full-batch SGD step from the same init)', () => {
    const n = train.count;
    const step = (o: Partial<HeadOptions>) =>
      trainHead(tf, train, null, 8, 3, options({ optimizer: 'sgd', momentum: 0, epochs: 1, batchSize: n, ...o }))
        .layers[0]!;
    const init = (() => {
      const random = seededRandom(0);
      return { kernel: initValues(8 * 3, 8, random), bias: initValues(3, 8, random) };
    })();
    const a = step({ lr: 0.1 });
    const b = step({ lr: 0.2 });
    // lr: the update w1 − w0 scales linearly with the learning rate.
    a.kernel.forEach((w, i) =>
      assert.ok(Math.abs(b.kernel[i]! - init.kernel[i]! - 2 * (w - init.kernel[i]!)) < 1e-5, `lr [${i}]`),
    );
    // weight decay: adds lr·λ·w0 to the step (PyTorch weight_decay), nothing else.
    const decayed = step({ lr: 0.1, weightDecay: 0.5 });
    decayed.kernel.forEach((w, i) =>
      assert.ok(Math.abs(w - a.kernel[i]! - -0.1 * 0.5 * init.kernel[i]!) < 1e-5, `weight decay [${i}]`),
    );
    decayed.bias.forEach((w, i) =>
      assert.ok(Math.abs(w - a.bias[i]! - -0.1 * 0.5 * init.bias[i]!) < 1e-5, `weight decay bias [${i}]`),
    );
    // momentum: on the first step buf = g, so momentum does not change it (a dampened buf would be (1 − μ)·g).
    const first = step({ lr: 0.1, momentum: 0.9 });
    first.kernel.forEach((w, i) => assert.ok(Math.abs(w - a.kernel[i]!) < 1e-6, `momentum [${i}]`));
    // batch size: two half batches make two steps, so the result is not the full-batch step.
    const halves = step({ lr: 0.1, batchSize: Math.ceil(n / 2) });
    assert.ok(halves.kernel.some((w, i) => Math.abs(w - a.kernel[i]!) > 1e-4));
  });

  it("Adam's first step moves every weight by lr (bias-corrected m̂/√v̂ = ±1)", () => {
    const random = seededRandom(0);
    const initKernel = initValues(8 * 3, 8, random);
    const r = trainHead(
      tf,
      train,
      null,
      8,
      3,
      options({ optimizer: 'adam', lr: 0.01, epochs: 1, batchSize: train.count }),
    );
    r.layers[0]!.kernel.forEach((w, i) =>
      assert.ok(Math.abs(Math.abs(w - initKernel[i]!) - 0.01) < 1e-5, `[${i}] moved ${w - initKernel[i]!}`),
    );
  });

  it('weight decay shrinks the weights', () => {
    const norm = (w: number[]) => Math.sqrt(w.reduce((s, x) => s + x * x, 0));
    const plain = norm(flat(trainHead(tf, train, null, 8, 3, options({ epochs: 10, lr: 0.05 }))));
    const decayed = norm(flat(trainHead(tf, train, null, 8, 3, options({ epochs: 10, lr: 0.05, weightDecay: 0.5 }))));
    assert.ok(decayed < plain * 0.8, `${decayed} vs ${plain}`);
  });

  it('StepLR multiplies the learning rate by gamma every step-size epochs', () => {
    const r = trainHead(tf, train, val, 8, 3, options({ epochs: 7, lr: 0.1, stepSize: 3, gamma: 0.5 }));
    assert.deepEqual(
      r.history.map((h) => Number(h.lr.toFixed(6))),
      [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025],
    );
    assert.equal(stepLr({ lr: 1, stepSize: 0, gamma: 0.1 }, 50), 1);
  });

  it('restores the best validation epoch and stops early after `patience` epochs without improvement', () => {
    // Labels of val are shuffled: validation cannot keep improving while training does.
    const noisyVal = { ...val, labels: Int32Array.from(val.labels, (_, i) => (i * 7) % 3) };
    const r = trainHead(tf, train, noisyVal, 8, 3, options({ epochs: 40, lr: 0.05, patience: 3, monitor: 'val_loss' }));
    assert.ok(r.stoppedEarly && r.history.length < 40, `ran ${r.history.length} epochs`);
    const best = r.history.reduce((b, h) => (h.valLoss! < b.valLoss! ? h : b));
    assert.equal(r.bestEpoch, best.epoch);
    assert.equal(r.history.length, r.bestEpoch + 3);
    const probabilities = predictProbabilities(tf, r.layers, noisyVal.features, noisyVal.count);
    let loss = 0;
    for (let i = 0; i < noisyVal.count; i++) loss -= Math.log(probabilities[i * 3 + noisyVal.labels[i]!]!);
    assert.ok(Math.abs(loss / noisyVal.count - best.valLoss!) < 1e-4, "returned weights are the best epoch's");
  });

  it('balanced class weights raise recall on a rare class', () => {
    const skewed = clusters(300, 4, 2, 2.5, 5, [0.9, 0.1]);
    assert.deepEqual([...balancedClassWeights(Int32Array.from([0, 0, 0, 1]), 2)], [Math.fround(2 / 3), 2]);
    const recall = (o: Partial<HeadOptions>) => {
      const r = trainHead(tf, skewed, null, 4, 2, options({ epochs: 15, lr: 0.05, ...o }));
      const p = predictProbabilities(tf, r.layers, skewed.features, skewed.count);
      let hit = 0;
      let total = 0;
      for (let i = 0; i < skewed.count; i++)
        if (skewed.labels[i] === 1) {
          total++;
          if (p[i * 2 + 1]! > p[i * 2]!) hit++;
        }
      return hit / total;
    };
    assert.ok(recall({ classWeight: 'balanced' }) > recall({ classWeight: 'none' }));
  });

  it('a hidden layer learns what a linear head cannot (XOR)', () => {
    const random = seededRandom(9);
    const count = 400;
    const features = new Float32Array(count * 2);
    const labels = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      const [x, y] = [random() * 2 - 1, random() * 2 - 1];
      features.set([x, y], i * 2);
      labels[i] = x * y > 0 ? 1 : 0;
    }
    const xor = { features, labels, count };
    const linear = trainHead(tf, xor, null, 2, 2, options({ epochs: 60, lr: 0.05 }));
    const hidden = trainHead(tf, xor, null, 2, 2, options({ epochs: 60, lr: 0.05, hidden: 32 }));
    assert.equal(hidden.layers.length, 2);
    assert.ok(linear.history.at(-1)!.trainAcc < 0.75, `linear ${linear.history.at(-1)!.trainAcc}`);
    assert.ok(hidden.history.at(-1)!.trainAcc > 0.9, `hidden ${hidden.history.at(-1)!.trainAcc}`);
  });

  it('refuses nonsense options and single-class data', () => {
    assert.throws(
      () => trainHead(tf, train, null, 8, 3, options({ epochs: 0 })),
      /epochs: expected a positive integer, got 0/,
    );
    assert.throws(() => trainHead(tf, train, null, 8, 1, options()), /need at least 2 classes/);
  });
});
