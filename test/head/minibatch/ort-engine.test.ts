import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OrtWideTrainer, type StepBatch } from '../../../src/head/minibatch/ort-engine.js';
import type { HeadOptions } from '../../../src/head/model.js';
import { seededRandom } from '../../../src/util/random.js';

const [dim, classes, n] = [10, 4, 6];

function batches(count: number, seed: number): StepBatch[] {
  const random = seededRandom(seed);
  return Array.from({ length: count }, () => {
    const labels = Int32Array.from({ length: n }, () => Math.floor(random() * classes));
    const weights = Float32Array.from(labels, (l) => 1 + l);
    const total = weights.reduce((a, b) => a + b, 0);
    const scale = weights.map((w) => w / total);
    const target = new Float32Array(n * classes);
    labels.forEach((l, i) => (target[i * classes + l] = scale[i]!));
    return { x: Float32Array.from({ length: n * dim }, () => random() * 2 - 1), n, target, scale, labels };
  });
}

function init(seed: number) {
  const random = seededRandom(seed);
  return {
    kernel: Float32Array.from({ length: dim * classes }, () => random() - 0.5),
    bias: Float32Array.from({ length: classes }, () => random() - 0.5),
  };
}

const bytes = (w: { kernel: Float32Array; bias: Float32Array }) =>
  Buffer.concat([Buffer.from(w.kernel.buffer), Buffer.from(w.bias.buffer)]);

describe('OrtWideTrainer', () => {
  const settings: [string, Pick<HeadOptions, 'optimizer' | 'momentum'>, number][] = [
    ['sgd momentum + weight decay', { optimizer: 'sgd', momentum: 0.9 }, 0.05],
    ['plain sgd', { optimizer: 'sgd', momentum: 0 }, 0],
    ['adam + weight decay', { optimizer: 'adam', momentum: 0 }, 0.01],
  ];
  for (const [name, options, decay] of settings) {
    it(`an unrolled run of several steps is exactly those steps one by one: ${name}`, async () => {
      const data = batches(5, 1);
      const lr = new Float32Array(classes).fill(0.1);
      const wd = new Float32Array(classes).fill(decay);
      const engine = { weightDecay: decay > 0, stats: true };
      const one = await OrtWideTrainer.create(dim, classes, 1, options, init(2), engine);
      const many = await OrtWideTrainer.create(dim, classes, 1, options, init(2), engine);
      try {
        const singles = [];
        for (const b of data)
          singles.push(await one.stepWithStats(b.x, b.n, b.target, b.scale, lr, wd, undefined, b.labels));
        // A group of 3, then the learning rate changes (StepLR) before a group of 2.
        const grouped = [...(await many.stepMany(data.slice(0, 3), lr, wd))];
        const lower = lr.map((v) => v * 0.5);
        const singlesLower = await one.stepWithStats(
          data[0]!.x,
          n,
          data[0]!.target,
          data[0]!.scale,
          lower,
          wd,
          undefined,
          data[0]!.labels,
        );
        grouped.push(...(await many.stepMany(data.slice(3, 5), lr, wd)));
        grouped.push(...(await many.stepMany([data[0]!], lower, wd)));
        assert.deepEqual(
          grouped.map((g) => [g.loss, g.correct]),
          [...singles, singlesLower].map((s) => [s.loss, s.correct]),
        );
        assert.ok(grouped.every((g) => Number.isFinite(g.loss) && g.loss > 0));
        assert.deepEqual(bytes(many.weights()), bytes(one.weights()));
        assert.notDeepEqual(bytes(one.weights()), bytes(init(2)), 'the steps changed the weights');
      } finally {
        await one.dispose();
        await many.dispose();
      }
    });
  }

  it('refuses a group whose batches differ in row count', async () => {
    const t = await OrtWideTrainer.create(dim, classes, 1, { optimizer: 'sgd', momentum: 0.9 }, init(1), {
      stats: true,
    });
    try {
      const [a, b] = batches(2, 3);
      const short = {
        ...b!,
        n: 3,
        x: b!.x.subarray(0, 3 * dim),
        target: b!.target.subarray(0, 3 * classes),
        scale: b!.scale.subarray(0, 3),
        labels: b!.labels!.subarray(0, 3),
      };
      await assert.rejects(
        t.stepMany([a!, short], new Float32Array(classes).fill(0.1), new Float32Array(classes)),
        /row count/,
      );
    } finally {
      await t.dispose();
    }
  });
});
