/**
 * The audit on real features (the pretrained MobileNetV2-int8 over ../shared): planted label noise on monkeys and
 * hymenoptera, the placeholder image among the outliers, and confident learning on the real cross-fitted
 * probabilities checked against the numpy reference.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { confidentLearning } from '../../src/audit/confident.js';
import { splitNeighbours } from '../../src/audit/knn.js';
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

/** The issue's goal, per noise kind, for confident learning alone. */
const GOAL = 0.9;
/** Seeds of the planted flips: the goal is asserted on their mean, so no single lucky draw decides it. */
const SEEDS = [1, 2, 3, 4, 5];
/** Each seed's floor: a regression guard under the lowest value measured (0.855, see README). */
const FLOOR = 0.8;

type Planted = { noisy: Int32Array; flipped: Set<number> };

/** Audits each seed's planting; asserts the goal on the means and the floor on every seed. */
async function plantedSeeds(
  t: { diagnostic: (m: string) => void },
  set: FeatureSet,
  name: string,
  plantSeed: (seed: number) => Planted,
  check: (r: AuditResult, p: Planted) => void = () => {},
): Promise<void> {
  const cl: Scores[] = [];
  for (const seed of SEEDS) {
    const p = plantSeed(seed);
    const r = await auditOf(set, p.noisy);
    const s = scores(r, p.flipped);
    t.diagnostic(
      `${name}, seed ${seed}, ${p.flipped.size} flipped, T ${r.crossFit.temperatureAllRows.toFixed(3)} → ${r.crossFit.temperature.toFixed(3)}: ${show(s)}`,
    );
    cl.push(s.confidentLearning);
    assert.ok(
      s.confidentLearning.precision >= FLOOR && s.confidentLearning.recall >= FLOOR,
      `seed ${seed}: ${show(s)}`,
    );
    // Rows flagged by both opinions are at least as precise as confident learning alone, and rank first.
    assert.ok(s.both.precision >= s.confidentLearning.precision - 1e-9, `seed ${seed}: ${show(s)}`);
    const tiers = r.labelIssues.map((a) => (a.confidentLearning && a.knnFlag ? 0 : a.confidentLearning ? 1 : 2));
    assert.deepEqual(
      tiers,
      [...tiers].sort((a, b) => a - b),
    );
    check(r, p);
  }
  const mean = (k: keyof Scores) => cl.reduce((a, s) => a + s[k], 0) / cl.length;
  t.diagnostic(
    `${name}: confident learning over seeds ${SEEDS.join(',')}: mean P ${mean('precision').toFixed(3)} R ${mean('recall').toFixed(3)}`,
  );
  assert.ok(
    mean('precision') >= GOAL && mean('recall') >= GOAL,
    `${name}: mean P ${mean('precision')} R ${mean('recall')}`,
  );
}

describe('audit on planted noise over real features', () => {
  let mon: FeatureSet;
  let hym: FeatureSet;
  before(async () => {
    if (skip) return;
    mon = await extracted(monkeys, 'training');
    hym = await extracted(hymenoptera, 'train');
  });

  it(
    'monkeys, 5 % flipped uniformly: confident learning alone reaches precision and recall ≥ 0.9 (mean of 5 seeds); flags equal the numpy reference',
    { skip },
    async (t) => {
      const m = mon.classes.length;
      await plantedSeeds(
        t,
        mon,
        'monkeys uniform',
        (seed) => plant(mon.labels, (y, random) => (y + 1 + Math.floor(random() * (m - 1))) % m, seed),
        (r, { noisy }) => {
          const flags = r.all.filter((a) => a.confidentLearning).map((a) => a.row);
          // Identical probabilities: the flags equal the reference implementation of the paper, row for row.
          if (!needsNumpy) assert.deepEqual(flags, referenceConfidentLearning(r.probabilities, noisy, m).flagged);
          assert.deepEqual(Array.from(confidentLearning(r.probabilities, noisy, m).flagged), flags);
        },
      );
    },
  );

  it(
    "monkeys, 5 % flipped to each class's most confused class: confident learning alone reaches precision and recall ≥ 0.9 (mean of 5 seeds)",
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
      t.diagnostic(`most confused class of each: ${target.join(',')}`);
      await plantedSeeds(t, mon, 'monkeys most-confused', (seed) => plant(mon.labels, (y) => target[y]!, seed));
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
