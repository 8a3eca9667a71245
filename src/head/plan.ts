/**
 * What both solvers select on: the grid of settings, and the plan of folds (a stratified, seeded hold-out of the
 * train split, or stratified k-fold when a hold-out would be too small; never the val split) with each fold's rows
 * normalised on its fit rows only, and the sweep table's rows. The probe (probe/select.ts) and mini-batch
 * training (minibatch/select.ts) each choose their setting on this plan.
 */
import { createHash } from 'node:crypto';
import { hashScore, stratifiedSplit } from '../dataset/split.js';
import type { Split } from './model.js';
import { type NormalizationKind, NORMALIZATIONS, applyNormalization, fitNormalization } from './normalize.js';

export interface SweepGrid {
  /** The L-BFGS probe's inverse L2 strengths (scikit-learn's C). */
  c: readonly number[];
  /** Mini-batch training: learning rates and weight decays. */
  lr: readonly number[];
  weightDecay: readonly number[];
  normalize: readonly NormalizationKind[];
}

/**
 * The probe: scikit-learn's usual C decades and one more on the weak side (l2-normalised rows need large weights).
 * Mini-batch: Adam learning rates from slow to fast, L2 penalties from none to strong. Both: every normalisation.
 */
export const DEFAULT_SWEEP_GRID: Readonly<SweepGrid> = Object.freeze({
  c: Object.freeze([0.01, 0.1, 1, 10, 100, 1000]),
  lr: Object.freeze([1e-3, 3e-3, 1e-2, 3e-2]),
  weightDecay: Object.freeze([0, 1e-4, 1e-3]),
  normalize: Object.freeze([...NORMALIZATIONS]),
});

/** A hold-out smaller than this selects on noise: use k-fold instead. */
export const MIN_HOLDOUT_ROWS = 50;
export const KFOLD = 5;
/** Weight of the log-normal prior on the temperature (σ = 1/√(2λ) = 0.5 in log T): see fitTemperature. */
export const TEMPERATURE_PRIOR = 2;

export interface Fold {
  fit: number[];
  held: number[];
}

export interface SelectionPlan {
  method: 'holdout' | 'kfold';
  folds: Fold[];
  /** Lines worth telling the user (classes that cannot be held out, why k-fold). */
  notes: string[];
}

/** Why classes with one distinct image are not scored by selection. */
function singleImageNote(classes: string[]): string {
  const names = classes.map((c) => JSON.stringify(c));
  const many = classes.length > 1;
  return `class${many ? 'es' : ''} ${names.slice(0, 5).join(', ')}${names.length > 5 ? ` and ${names.length - 5} more` : ''} ha${many ? 've' : 's'} one distinct training image: it cannot be held out, so selection does not score ${many ? 'them' : 'it'} (still trained on)`;
}

/**
 * Stratified k-fold over the representative rows `eligible`: each class's rows, in seeded hash order, are dealt
 * round-robin to KFOLD folds, and every row of a group follows its representative. Empty folds are dropped.
 */
function stratifiedFolds(
  eligible: number[],
  classesToHold: Set<number>,
  labels: Int32Array,
  keys: string[],
  seed: number,
  groupRows: (representative: number) => number[],
  k = KFOLD,
): Fold[] {
  const fold = new Map<number, number>();
  for (const c of classesToHold) {
    const ranked = eligible
      .filter((r) => labels[r] === c)
      .sort((a, b) => hashScore(seed, keys[a]!) - hashScore(seed, keys[b]!));
    ranked.forEach((r, i) => {
      for (const m of groupRows(r)) fold.set(m, i % k);
    });
  }
  const rows = [...labels.keys()];
  const folds: Fold[] = [];
  for (let f = 0; f < k; f++) {
    const held = rows.filter((r) => fold.get(r) === f);
    if (held.length > 0) folds.push({ fit: rows.filter((r) => fold.get(r) !== f), held });
  }
  return folds;
}

/**
 * Stratified hold-out (fraction of each class, seeded by path) when it gives at least MIN_HOLDOUT_ROWS rows and
 * every class that can be held out is; otherwise stratified k-fold. A class with one image is always trained on
 * and never held out. Returns a reason string when nothing can be held out at all. `kfold` asks for k-fold
 * whatever the hold-out's size (the out-of-fold temperature: every row is predicted once by a model that never saw
 * it).
 */
export function planSelection(
  labels: Int32Array,
  keys: string[],
  classNames: string[],
  fraction: number,
  seed: number,
  groups?: Int32Array,
  kfold?: number,
): SelectionPlan | string {
  // Rows of one group (identical features: duplicate images) always fall on the same side, or the hold-out would
  // score memorised copies and favour overfitting. Planning is done on one representative row per group.
  const groupOf = groups ?? Int32Array.from(labels.keys());
  const members = new Map<number, number[]>();
  labels.forEach((_, r) => {
    const list = members.get(groupOf[r]!) ?? [];
    list.push(r);
    members.set(groupOf[r]!, list);
  });
  const reps = [...members.values()].map((m) => m[0]!);
  const expand = (rs: number[]) => rs.flatMap((r) => members.get(groupOf[r]!)!).sort((a, b) => a - b);
  const counts = new Map<number, number>();
  for (const r of reps) counts.set(labels[r]!, (counts.get(labels[r]!) ?? 0) + 1);
  const singles = [...counts]
    .filter(([, n]) => n === 1)
    .map(([c]) => c)
    .sort((a, b) => a - b);
  const rows = [...labels.keys()];
  const eligible = reps.filter((r) => counts.get(labels[r]!)! >= 2);
  const notes: string[] = [];
  if (singles.length > 0) notes.push(singleImageNote(singles.map((c) => classNames[c] ?? String(c))));
  if (eligible.length === 0)
    return 'no class has two distinct training images, so nothing can be held out to choose hyperparameters on';
  const classesToHold = new Set(eligible.map((r) => labels[r]!));
  const split = stratifiedSplit(
    eligible,
    (r) => String(labels[r]),
    (r) => keys[r]!,
    fraction,
    seed,
  );
  const val = expand(split.val);
  const heldClasses = new Set(val.map((r) => labels[r]!));
  if (kfold !== undefined) {
    const folds = stratifiedFolds(eligible, classesToHold, labels, keys, seed, (r) => members.get(groupOf[r]!)!, kfold);
    return { method: 'kfold', folds, notes };
  }
  if (val.length >= MIN_HOLDOUT_ROWS && heldClasses.size === classesToHold.size) {
    const held = new Set(val);
    return { method: 'holdout', folds: [{ fit: rows.filter((r) => !held.has(r)), held: val }], notes };
  }
  const folds = stratifiedFolds(eligible, classesToHold, labels, keys, seed, (r) => members.get(groupOf[r]!)!);
  // A class with fewer distinct images than KFOLD leaves folds empty: say how many there really are.
  const fewer = folds.length < KFOLD ? ` (not ${KFOLD}: the largest class has ${folds.length} distinct images)` : '';
  notes.push(
    `a ${Math.round(fraction * 100)}% hold-out would have ${val.length} rows (fewer than ${MIN_HOLDOUT_ROWS}, or a class missing): selecting by stratified ${folds.length}-fold instead${fewer}`,
  );
  return { method: 'kfold', folds, notes };
}

function featureKey(split: Split, dim: number, r: number): string {
  const bytes = new Uint8Array(split.features.buffer, split.features.byteOffset + r * dim * 4, dim * 4);
  return createHash('sha1').update(bytes).digest('base64');
}

/**
 * Group ids for rows with byte-identical features and the same label (duplicate images); each row's id is its
 * group's first row. The same picture under two labels is two groups: each is its class's image.
 */
export function duplicateGroups(split: Split, dim: number): Int32Array {
  const first = new Map<string, number>();
  return Int32Array.from({ length: split.count }, (_, r) => {
    const key = `${split.labels[r]}:${featureKey(split, dim, r)}`;
    if (!first.has(key)) first.set(key, r);
    return first.get(key)!;
  });
}

/** Rows whose features equal those of a row with another label: the same picture labelled twice, probably by mistake. */
export function conflictingDuplicates(split: Split, dim: number): number {
  const labelsOf = new Map<string, Set<number>>();
  const keys = Array.from({ length: split.count }, (_, r) => featureKey(split, dim, r));
  keys.forEach((k, r) => labelsOf.set(k, (labelsOf.get(k) ?? new Set()).add(split.labels[r]!)));
  return keys.filter((k) => labelsOf.get(k)!.size > 1).length;
}

export function subsetRows(split: Split, rows: number[], dim: number): Split {
  const features = new Float32Array(rows.length * dim);
  rows.forEach((row, k) => features.set(split.features.subarray(row * dim, (row + 1) * dim), k * dim));
  return { features, labels: Int32Array.from(rows, (r) => split.labels[r]!), count: rows.length };
}

/** A fold's fit and held-out rows, normalised with statistics fitted on the fit rows only. */
export function normalisedFold(
  train: Split,
  fold: Fold,
  dim: number,
  kind: NormalizationKind,
): { fit: Split; held: Split } {
  const fit = subsetRows(train, fold.fit, dim);
  const held = subsetRows(train, fold.held, dim);
  const n = fitNormalization(kind, fit.features, fit.count, dim);
  applyNormalization(n, fit.features, fit.count, dim);
  applyNormalization(n, held.features, held.count, dim);
  return { fit, held };
}

export interface SweepRow {
  normalize: NormalizationKind;
  /** Mini-batch candidates: the learning rate (null for the probe, which has none). */
  lr: number | null;
  /** The probe's C (scikit-learn's inverse L2 strength); null for mini-batch candidates. */
  c: number | null;
  /** L2 strength λ: PyTorch's weight_decay for mini-batch candidates, 1/(C·n) for the probe (n = all train rows). */
  weightDecay: number;
  /** Epoch with the best held-out score (1-based); null for the probe, which runs to convergence. */
  epoch: number | null;
  /** The probe's L-BFGS iterations (the most over the folds). */
  iterations?: number;
  holdoutLoss: number;
  holdoutAcc: number;
  /**
   * Held-out NLL after the best temperature: every probe candidate; for mini-batch candidates, each
   * normalisation's best (the finalists; null for the rest). Candidates are compared on it because the saved head
   * is calibrated the same way: what matters is how well the logits rank, not how sharp they are before scaling.
   */
  calibratedLoss: number | null;
  /** The probe: within one standard error of the best calibrated NLL (a tie the rule may choose). */
  tied?: boolean;
}

/** Typed arrays end to end (the folds' held-out rows, in fold order). */
export function concat<T extends Float32Array | Int32Array>(parts: T[], ctor: { new (n: number): T }): T {
  const out = new ctor(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
