/**
 * The audit on real features (the pretrained MobileNetV2-int8 over ../shared): planted label noise on monkeys and
 * hymenoptera, the placeholder image among the outliers, and confident learning on the real cross-fitted
 * probabilities checked against the numpy reference.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { confidentLearning } from '../../src/audit/confident.js';
import { knnConsensus, splitNeighbours } from '../../src/audit/knn.js';
import { type AuditResult, DEFAULT_AUDIT_OPTIONS, auditRows } from '../../src/jobs/audit.js';
import { type FeatureSet, FeatureCache } from '../../src/store/reader.js';
import { seededRandom } from '../../src/util/random.js';
import { needsNumpy, referenceConfidentLearning } from '../support/confident.js';
import { extractMobilenet, hymenoptera, mobilenetModel, needsShared, sharedDir, tempDir } from '../support/helpers.js';

const monkeys = path.join(sharedDir, 'data/monkeys');
const skip = needsShared(mobilenetModel, hymenoptera, monkeys);

async function extracted(data: string, split: string): Promise<FeatureSet> {
  const cache = path.join(await tempDir('featcache-audit-'), 'features');
  const r = await extractMobilenet(data, split, cache);
  assert.equal(r.code, 0, r.stderr);
  return (await FeatureCache.open(cache)).read(split);
}

/** 5 % of rows (seeded), flipped by `to`. */
function plant(labels: Int32Array, to: (given: number, random: () => number) => number, seed: number) {
  const random = seededRandom(seed);
  const order = [...labels.keys()].map((r) => [random(), r] as const).sort((a, b) => a[0] - b[0]);
  const flipped = new Set(order.slice(0, Math.round(0.05 * labels.length)).map(([, r]) => r));
  const noisy = labels.slice();
  for (const r of flipped) noisy[r] = to(labels[r]!, random);
  return { noisy, flipped };
}

const auditOf = (set: FeatureSet, labels: Int32Array) =>
  auditRows(
    {
      features: set.features,
      labels,
      count: set.count,
      dim: set.dim,
      paths: set.paths,
      rows: [...labels.keys()],
      classes: set.classes,
    },
    DEFAULT_AUDIT_OPTIONS,
  );

interface Scores {
  precision: number;
  recall: number;
  flagged: number;
}
function score(flags: Set<number>, truth: Set<number>): Scores {
  const hits = [...flags].filter((r) => truth.has(r)).length;
  return { precision: flags.size > 0 ? hits / flags.size : 0, recall: hits / truth.size, flagged: flags.size };
}
function scores(r: AuditResult, truth: Set<number>) {
  const cl = new Set(r.all.filter((a) => a.confidentLearning).map((a) => a.row));
  const knn = new Set(r.all.filter((a) => a.knnFlag).map((a) => a.row));
  return {
    confidentLearning: score(cl, truth),
    knn: score(knn, truth),
    both: score(new Set([...cl].filter((x) => knn.has(x))), truth),
    either: score(new Set([...cl, ...knn]), truth),
  };
}
const show = (s: ReturnType<typeof scores>) =>
  Object.entries(s)
    .map(([k, v]) => `${k} P ${v.precision.toFixed(3)} R ${v.recall.toFixed(3)} (${v.flagged})`)
    .join('; ');

describe('audit on planted noise over real features', () => {
  let mon: FeatureSet;
  let hym: FeatureSet;
  before(async () => {
    if (skip) return;
    mon = await extracted(monkeys, 'training');
    hym = await extracted(hymenoptera, 'train');
  });

  it(
    'monkeys, 5 % flipped uniformly: precision of both flags and recall of either ≥ 0.9; CL flags equal the numpy reference',
    { skip },
    async (t) => {
      const m = mon.classes.length;
      const { noisy, flipped } = plant(mon.labels, (y, random) => (y + 1 + Math.floor(random() * (m - 1))) % m, 7);
      const r = await auditOf(mon, noisy);
      const s = scores(r, flipped);
      t.diagnostic(`monkeys uniform, ${flipped.size} flipped: ${show(s)}`);
      assert.ok(s.both.precision >= 0.9, show(s));
      assert.ok(s.either.recall >= 0.9, show(s));
      // Floors under the issue's 0.9 goal for confident learning alone (measured 0.98 / 0.85, see README).
      assert.ok(s.confidentLearning.precision >= 0.9 && s.confidentLearning.recall >= 0.8, show(s));
      // Identical probabilities: the flags equal the reference implementation of the paper, row for row.
      const ref = referenceConfidentLearning(r.probabilities, noisy, m);
      if (!needsNumpy)
        assert.deepEqual(
          r.all.filter((a) => a.confidentLearning).map((a) => a.row),
          ref.flagged,
        );
      assert.deepEqual(
        Array.from(confidentLearning(r.probabilities, noisy, m).flagged),
        r.all.filter((a) => a.confidentLearning).map((a) => a.row),
      );
      // Rows flagged by both opinions come first.
      const tiers = r.labelIssues.map((a) => (a.confidentLearning && a.knnFlag ? 0 : a.confidentLearning ? 1 : 2));
      assert.deepEqual(
        tiers,
        [...tiers].sort((a, b) => a - b),
      );
    },
  );

  it(
    "monkeys, 5 % flipped to each class's most confused class: precision of both flags and recall of either ≥ 0.9",
    { skip },
    async (t) => {
      const m = mon.classes.length;
      // The most confused class, from the clean labels' neighbours (independent of the probe under test).
      const n = await splitNeighbours(mon.features, mon.count, mon.dim, 10);
      const confusion = new Float64Array(m * m);
      mon.labels.forEach((y, r) => {
        for (let i = 0; i < n.k; i++) confusion[y * m + mon.labels[n.indices[r * n.k + i]!]!]! += 1;
      });
      const target = Array.from({ length: m }, (_, y) => {
        let best = -1;
        for (let j = 0; j < m; j++)
          if (j !== y && (best < 0 || confusion[y * m + j]! > confusion[y * m + best]!)) best = j;
        return best;
      });
      const { noisy, flipped } = plant(mon.labels, (y) => target[y]!, 11);
      const r = await auditOf(mon, noisy);
      const s = scores(r, flipped);
      t.diagnostic(`monkeys most-confused (${target.join(',')}), ${flipped.size} flipped: ${show(s)}`);
      assert.ok(s.both.precision >= 0.9, show(s));
      assert.ok(s.either.recall >= 0.9, show(s));
      assert.ok(s.confidentLearning.precision >= 0.85 && s.confidentLearning.recall >= 0.8, show(s));
      void knnConsensus;
    },
  );

  it(
    'hymenoptera: 5 % flipped (P/R reported), and the placeholder GIF is among the top 3 outliers unplanted',
    { skip },
    async (t) => {
      const clean = await auditOf(hym, hym.labels);
      const top = clean.outliers.slice(0, 3).map((o) => path.basename(o.path));
      t.diagnostic(`hymenoptera top outliers: ${top.join(', ')}`);
      assert.ok(top.includes('imageNotFound.gif'), top.join(', '));
      assert.ok(clean.outliers[0]!.distanceOutlier);
      const { noisy, flipped } = plant(hym.labels, (y) => 1 - y, 5);
      const s = scores(await auditOf(hym, noisy), flipped);
      t.diagnostic(`hymenoptera, ${flipped.size} flipped: ${show(s)}`);
      // A harder set (0.93 val accuracy): the goal here is to report, with a floor well under what was measured.
      assert.ok(s.either.recall >= 0.75 && s.confidentLearning.precision >= 0.6, show(s));
    },
  );
});
