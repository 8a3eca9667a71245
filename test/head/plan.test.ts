import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KFOLD, MIN_HOLDOUT_ROWS, conflictingDuplicates, duplicateGroups, planSelection } from '../../src/head/plan.js';
import { labelledClusters } from '../support/synthetic-rows.js';

const keys = (n: number) => Array.from({ length: n }, (_, i) => `img${i}.jpg`);
const names = ['a', 'b', 'c', 'd'];

describe('selection plan', () => {
  it('k-fold on request (the out-of-fold temperature), even where a hold-out would do', () => {
    const n = 300;
    const labels = Int32Array.from({ length: n }, (_, i) => i % 3);
    assert.equal((planSelection(labels, keys(n), names, 0.2, 1) as { method: string }).method, 'holdout');
    const plan = planSelection(labels, keys(n), names, 0.2, 1, undefined, 10);
    assert.ok(typeof plan !== 'string');
    assert.equal(plan.method, 'kfold');
    assert.equal(plan.folds.length, 10);
    const held = plan.folds.flatMap((f) => f.held).sort((a, b) => a - b);
    assert.deepEqual(held, [...Array(n).keys()], 'every row held out exactly once');
    for (const f of plan.folds) {
      assert.equal(f.fit.length + f.held.length, n);
      assert.ok(f.held.every((r) => !f.fit.includes(r)));
      for (let c = 0; c < 3; c++) assert.equal(f.held.filter((r) => labels[r] === c).length, 10, 'stratified');
    }
  });

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
    const split = labelledClusters(200, 4, 2, 0.5, 1);
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
    const split = labelledClusters(40, 4, 2, 0.5, 2);
    // Row 1 (class 1) becomes a copy of row 0 (class 0); row 2 (class 0) an exact duplicate of row 0.
    split.features.copyWithin(4, 0, 4);
    split.features.copyWithin(8, 0, 4);
    assert.deepEqual([split.labels[0], split.labels[1], split.labels[2]], [0, 1, 0]);
    const groups = duplicateGroups(split, 4);
    assert.equal(groups[2], 0, 'same label: one group');
    assert.equal(groups[1], 1, 'another label: its own group');
    assert.equal(conflictingDuplicates(split, 4), 3, 'rows 0, 1 and 2 share features across two labels');
    assert.equal(conflictingDuplicates(labelledClusters(40, 4, 2, 0.5, 2), 4), 0);
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
