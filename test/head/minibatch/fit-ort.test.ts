import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { FeatcacheError } from '../../../src/errors.js';
import { shouldUseOrtHead } from '../../../src/head/minibatch/engine.js';
import { fitHeadOrt } from '../../../src/head/minibatch/fit-ort.js';
import { type Tf, loadTf } from '../../../src/head/runtime.js';
import { DEFAULT_HEAD_OPTIONS, type EpochStats, type HeadOptions, type Split } from '../../../src/head/model.js';
import { type TrainResult, fitHead } from '../../../src/head/minibatch/train.js';
import { seededRandom } from '../../../src/util/random.js';
import { repoRoot } from '../../support/helpers.js';

/** Noisy clusters with unequal class sizes (so balanced class weights change the run). */
function clusters(count: number, dim: number, classes: number, noise: number, seed: number): Split {
  const random = seededRandom(seed);
  const centres = Float32Array.from({ length: classes * dim }, () => random() * 2 - 1);
  // Class c is drawn with probability ∝ c + 1.
  const total = (classes * (classes + 1)) / 2;
  const labels = Int32Array.from({ length: count }, () => {
    let u = random() * total;
    let c = 0;
    while (u > c + 1 && c < classes - 1) u -= ++c;
    return c;
  });
  const features = new Float32Array(count * dim);
  for (let r = 0; r < count; r++)
    for (let d = 0; d < dim; d++) features[r * dim + d] = centres[labels[r]! * dim + d]! + (random() * 2 - 1) * noise;
  return { features, labels, count };
}

const options = (over: Partial<HeadOptions>): HeadOptions => ({
  ...DEFAULT_HEAD_OPTIONS,
  epochs: 6,
  batchSize: 32,
  ...over,
});
const weightsOf = (r: TrainResult) => [...r.layers[0]!.kernel, ...r.layers[0]!.bias];
const bytesOf = (r: TrainResult) =>
  Buffer.concat(
    r.layers.flatMap((l) => [
      Buffer.from(l.kernel.buffer, l.kernel.byteOffset, l.kernel.byteLength),
      Buffer.from(l.bias.buffer, l.bias.byteOffset, l.bias.byteLength),
    ]),
  );

/**
 * Both engines run the same float32 arithmetic in different orders (MLAS vs tfjs kernels' summation order, and
 * the engine's reparametrised optimiser state): per-step rounding of ~1e-7 relative, compounded over ~60 steps.
 * Observed worst case here 9e-7 of the weights' scale (wasm backend); 1e-5 leaves 10× margin, while a wrong learning rate,
 * schedule step, momentum, bias correction or class weight moves weights by >1e-2.
 */
const TOLERANCE = 1e-5;

function assertClose(got: number[], want: number[], what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const scale = Math.max(...want.map(Math.abs));
  got.forEach((v, i) =>
    assert.ok(Math.abs(v - want[i]!) <= TOLERANCE * scale, `${what}[${i}]: ${v} vs ${want[i]} (scale ${scale})`),
  );
}

function assertHistoryClose(got: EpochStats[], want: EpochStats[], what: string): void {
  assert.equal(got.length, want.length, `${what}: epochs`);
  got.forEach((g, e) => {
    const w = want[e]!;
    assert.equal(g.epoch, w.epoch);
    assert.equal(g.lr, w.lr, `${what} epoch ${e + 1} lr`);
    for (const key of ['trainLoss', 'trainAcc', 'valLoss', 'valAcc'] as const) {
      if (w[key] === null) assert.equal(g[key], null);
      else
        assert.ok(
          Math.abs(g[key]! - w[key]) <= TOLERANCE * Math.max(1, Math.abs(w[key])),
          `${what} epoch ${e + 1} ${key}: ${g[key]} vs ${w[key]}`,
        );
    }
  });
}

describe('fitHeadOrt', () => {
  let tf: Tf;
  const [dim, classes] = [12, 4];
  const train = clusters(300, dim, classes, 1.2, 1);
  const val = clusters(90, dim, classes, 1.2, 2);
  before(async () => {
    tf = (await loadTf('auto')).tf;
  });

  const cases: [string, Partial<HeadOptions>][] = [
    ['adam', { optimizer: 'adam', lr: 0.01 }],
    [
      'adam + StepLR + balanced + weight decay',
      { optimizer: 'adam', lr: 0.01, stepSize: 2, gamma: 0.3, classWeight: 'balanced', weightDecay: 0.01 },
    ],
    ['sgd momentum', { optimizer: 'sgd', lr: 0.05, momentum: 0.9 }],
    [
      'sgd momentum + StepLR + balanced',
      { optimizer: 'sgd', lr: 0.05, momentum: 0.9, stepSize: 2, gamma: 0.5, classWeight: 'balanced' },
    ],
    [
      'sgd momentum + weight decay + StepLR',
      { optimizer: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 0.05, stepSize: 3, gamma: 0.2 },
    ],
    [
      'plain sgd + weight decay + odd batch',
      { optimizer: 'sgd', lr: 0.1, momentum: 0, weightDecay: 0.02, batchSize: 37 },
    ],
  ];
  for (const [name, over] of cases) {
    it(`trains as fitHead does (tfjs): ${name}`, async () => {
      const o = options({ ...over, seed: 5 });
      const want = fitHead(tf, train, val, dim, classes, o, { selectOnVal: false });
      const got = await fitHeadOrt(train, val, dim, classes, o, { selectOnVal: false });
      assert.deepEqual(got.layers[0]!.shape, [dim, classes]);
      assert.equal(got.layers[0]!.activation, 'softmax');
      assertClose(weightsOf(got), weightsOf(want), name);
      assertHistoryClose(got.history, want.history, name);
      assert.equal(got.bestEpoch, want.bestEpoch);
    });
  }

  it('matches the independent numpy implementation of PyTorch Adam, SGD momentum, weight decay and StepLR', async () => {
    // Fixture: test/head/fixtures/make_fit_reference.py (float64, same PRNG, init and shuffles, PyTorch definitions).
    const ref = JSON.parse(fs.readFileSync(path.join(repoRoot, 'test/head/fixtures/fit-reference.json'), 'utf8'));
    const data: Split = {
      features: Float32Array.from(ref.features),
      labels: Int32Array.from(ref.labels),
      count: ref.count,
    };
    for (const c of ref.cases) {
      const r = await fitHeadOrt(data, null, ref.dim, ref.classes, { ...DEFAULT_HEAD_OPTIONS, ...c.options });
      const want = [...c.kernel, ...c.bias] as number[];
      weightsOf(r).forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 2e-5, `${c.name}[${i}]: ${v} vs ${want[i]}`));
    }
  });

  it('restores the best validation epoch and stops on patience, as fitHead does', async () => {
    // A large learning rate on a small, noisy set: validation loss turns up after a few epochs.
    const small = clusters(60, dim, classes, 2.5, 3);
    const o = options({ optimizer: 'sgd', lr: 0.5, momentum: 0.9, epochs: 20, batchSize: 8, patience: 4, seed: 2 });
    const want = fitHead(tf, small, val, dim, classes, o);
    const got = await fitHeadOrt(small, val, dim, classes, o);
    assert.ok(
      want.bestEpoch < want.history.length,
      `the scenario must pick an earlier epoch (best ${want.bestEpoch} of ${want.history.length})`,
    );
    assert.equal(got.bestEpoch, want.bestEpoch);
    assert.equal(got.stoppedEarly, want.stoppedEarly);
    assert.equal(got.history.length, want.history.length);
    assertClose(weightsOf(got), weightsOf(want), 'restored');
    // The restored weights are exactly those of a run that stops at the best epoch.
    const upToBest = await fitHeadOrt(
      small,
      val,
      dim,
      classes,
      { ...o, epochs: got.bestEpoch, patience: 0 },
      { selectOnVal: false },
    );
    assert.deepEqual(bytesOf(got), bytesOf(upToBest));
    // Without selection the last epoch's weights are kept, which differ.
    const last = await fitHeadOrt(small, val, dim, classes, o, { selectOnVal: false });
    assert.equal(last.bestEpoch, o.epochs);
    assert.notDeepEqual(bytesOf(last), bytesOf(got));
  });

  it('selects on val_acc like fitHead', async () => {
    const o = options({ optimizer: 'adam', lr: 0.05, epochs: 8, monitor: 'val_acc', seed: 9 });
    const want = fitHead(tf, train, val, dim, classes, o);
    const got = await fitHeadOrt(train, val, dim, classes, o);
    assert.equal(got.bestEpoch, want.bestEpoch);
    assertClose(weightsOf(got), weightsOf(want), 'val_acc');
  });

  it('is byte-identical across runs with one seed, and the seed matters', async () => {
    const o = options({ optimizer: 'adam', lr: 0.01, classWeight: 'balanced', stepSize: 2, seed: 11 });
    const seen: EpochStats[] = [];
    const a = await fitHeadOrt(train, val, dim, classes, o, { onEpoch: (s) => seen.push(s) });
    const b = await fitHeadOrt(train, val, dim, classes, o);
    const c = await fitHeadOrt(train, val, dim, classes, { ...o, seed: 12 });
    assert.deepEqual(bytesOf(a), bytesOf(b));
    assert.deepEqual(
      a.history.map(({ seconds: _, ...s }) => s),
      b.history.map(({ seconds: _, ...s }) => s),
    );
    assert.notDeepEqual(bytesOf(a), bytesOf(c));
    assert.deepEqual(seen, a.history);
    assert.ok(a.secondsPerEpoch > 0);
  });

  it('refuses a hidden layer (the caller trains those with tfjs) and bad options', async () => {
    await assert.rejects(
      fitHeadOrt(train, val, dim, classes, options({ hidden: 8 })),
      (e: unknown) => e instanceof FeatcacheError && /hidden/.test(e.message),
    );
    await assert.rejects(fitHeadOrt(train, val, dim, classes, options({ batchSize: 0 })), /batchSize/);
  });

  it('shouldUseOrtHead: only without tfjs-node and only for linear heads', () => {
    assert.equal(shouldUseOrtHead('wasm', { hidden: 0 }), true);
    assert.equal(shouldUseOrtHead('cpu', { hidden: 0 }), true);
    assert.equal(shouldUseOrtHead('tensorflow', { hidden: 0 }), false);
    assert.equal(shouldUseOrtHead('wasm', { hidden: 16 }), false);
  });
});
