/**
 * The audit job: store → head → audit. Finds likely label errors and outliers in a cached split, from the cache
 * alone: out-of-sample probabilities by cross-fitting the default probe, confident learning on them, a kNN-consensus
 * second opinion, and two outlier scores. It writes a report, lists and a file of suggested labels; it never
 * changes the cache or the user's labels.
 */
import { createHash } from 'node:crypto';
import { DEFAULT_AUDIT_OPTIONS } from './defaults.js';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import {
  FILTERS,
  type FilterBy,
  RANK_BY,
  type RankBy,
  confidentLearning,
  labelQuality,
  suggestedLabel,
} from '../audit/confident.js';
import { calibrateOnKeptLabels } from '../audit/calibrate.js';
import { crossFitProbabilities } from '../audit/crossfit.js';
import { knnConsensus, splitNeighbours } from '../audit/knn.js';
import { meanNeighbourDistance, normalisedEntropy, tukeyFence } from '../audit/outliers.js';
import {
  type AuditIssue,
  type ConfusedPair,
  issuesCsv,
  labelsCsv,
  noiseMatrixCsv,
  reportHtml,
} from '../audit/report.js';
import { FeatcacheError, invalidParameter, numberIn, optionName, parseChoice, positiveInteger } from '../errors.js';
import type { ProbeGrid } from '../head/probe/select.js';
import { CLASS_WEIGHTS, type HeadOptions, type Split } from '../head/model.js';
import { type SplitRows, loadSplit, rowImageFiles } from '../neighbors/split.js';
import { FeatureCache } from '../store/reader.js';
import { sha256Bytes } from '../util/fsx.js';
import { withDefaults } from '../util/options.js';
import { prepareOutputDir, writeOutputFile } from '../util/output.js';
import { toolVersions } from '../version.js';
import { PROBE_WORK_LIMIT, SUBSAMPLE_WORK } from './train-head-scale.js';

export interface AuditOptions {
  cache: string;
  split: string;
  /** Neighbours per row for the kNN consensus and the distance outlier score. */
  k: number;
  /** How label issues are ranked: self-confidence (cleanlab's default) or normalised margin. */
  rank: RankBy;
  /** Confident learning's rule for which rows to flag. */
  filterBy: FilterBy;
  /** The kNN consensus flags a row when more than this share of its neighbours carry another label. */
  knnThreshold: number;
  /** A prediction this flat (entropy / log(classes), 1 = uniform) or flatter is "unlike any class". */
  entropyThreshold: number;
  /** Tukey's multiplier of the interquartile range for the distance outlier fence. */
  iqrFence: number;
  seed: number;
  /** Share of the split held out when C is chosen (train-head's selection). */
  holdoutFraction: number;
  grid: ProbeGrid;
  classWeight: HeadOptions['classWeight'];
  /** Directory for report.html, audit.json and the CSV lists (new, empty, or one the audit wrote); null: none. */
  out: string | null;
  /**
   * Dataset root the cached paths are relative to, for the report's thumbnails when the data moved since extract;
   * null: where extract read the images (the data root each part records).
   */
  data: string | null;
  /** id,label CSV of the split with confident learning's suggested labels, for the user to review. */
  labelsOut: string | null;
  /** Issues shown per section of the report (all are in the CSV and JSON). */
  reportLimit: number;
  log?: ((line: string) => void) | undefined;
}

export { DEFAULT_AUDIT_OPTIONS };

export interface AuditResult {
  split: string;
  rows: number;
  classes: string[];
  /** Rows with out-of-sample probabilities (all but those of classes with one distinct image). */
  scoredRows: number;
  crossFit: {
    folds: number;
    c: number;
    normalize: string;
    /** The temperature of the audited probabilities: fitted on the rows confident learning keeps. */
    temperature: number;
    /** Rows C was chosen on: all, or a stratified subsample above the probe's work limit (as train-head). */
    selectionRows: number;
    /** The temperature fitted on every scored row against its given label (the first round). */
    temperatureAllRows: number;
    /** Each round of refitting: its temperature and the rows flagged under it. */
    calibrationRounds: { temperature: number; flagged: number }[];
    accuracy: number;
    seconds: { selection: number; fits: number };
  };
  /** The exact k-nearest-neighbour search over the split. */
  knnSeconds: number;
  counts: {
    confidentLearning: number;
    knn: number;
    both: number;
    distanceOutliers: number;
    flat: number;
  };
  distanceFence: number;
  /** classes × classes P(likely true | given), row-major. */
  noiseMatrix: number[];
  /** Off-diagonal cells of the estimated joint, most rows first. */
  confused: ConfusedPair[];
  /** Rows flagged by confident learning or the kNN consensus: both first, then by label quality (worst first). */
  labelIssues: AuditIssue[];
  /** Rows far from all others or unlike any class: both first, then farthest first. */
  outliers: AuditIssue[];
  /** Every row's scores, in split order. */
  all: AuditIssue[];
  /** The cross-fitted probabilities at the refitted temperature (rows × classes; NaN for unscored rows). */
  probabilities: Float32Array;
  notes: string[];
  written: string[];
  seconds: number;
}

/** Marker that makes an audit output directory featcache's to update. */
export const AUDIT_MARKER = '.featcache-audit.json';
/** Beside a --labels-out file: its sha256 when featcache wrote it, so only an unedited copy is ever replaced. */
const LABELS_SIDECAR = '.featcache.json';

export function resolveAuditOptions(options: Partial<AuditOptions>): AuditOptions {
  const o: AuditOptions = withDefaults(DEFAULT_AUDIT_OPTIONS, options);
  positiveInteger('k', o.k);
  positiveInteger('reportLimit', o.reportLimit);
  parseChoice('rank', o.rank, RANK_BY);
  parseChoice('filterBy', o.filterBy, FILTERS);
  parseChoice('classWeight', o.classWeight, CLASS_WEIGHTS);
  numberIn('knnThreshold', o.knnThreshold, 0, 1);
  numberIn('entropyThreshold', o.entropyThreshold, 0, 1);
  numberIn('iqrFence', o.iqrFence, 0, 100);
  numberIn('holdoutFraction', o.holdoutFraction, 0, 1, true);
  if (!Number.isInteger(o.seed)) throw invalidParameter('seed', 'an integer', o.seed);
  return o;
}

/**
 * Audits the labels of a cached split.
 *
 * @example
 * ```ts
 * import { audit } from 'featcache';
 * const r = await audit({ cache: 'features', split: 'train', out: 'audit', labelsOut: 'suggested.csv' });
 * console.log(r.counts, r.labelIssues.slice(0, 5));
 * ```
 */
export async function audit(options: Partial<AuditOptions> = {}): Promise<AuditResult> {
  const asked = resolveAuditOptions(options);
  const log = asked.log ?? (() => {});
  const started = performance.now();
  // Refuse outputs we may not write before spending time on the fits.
  const outDir = asked.out === null ? null : await prepareOutputDir(asked.out, AUDIT_MARKER, 'out');
  try {
    if (asked.labelsOut !== null) await checkLabelsOut(asked.labelsOut);
    if (
      asked.data !== null &&
      !(await fs.stat(asked.data).then(
        (s) => s.isDirectory(),
        () => false,
      ))
    )
      throw invalidParameter('data', 'the dataset folder the cached paths are relative to', asked.data);
    const cache = await FeatureCache.open(asked.cache);
    // The split as the cache names it (`train` may be cached as `training`: util/split-names.ts).
    const o = { ...asked, split: await cache.resolveSplit(asked.split) };
    if (!(await cache.splits()).includes(o.split))
      throw new FeatcacheError(
        `${optionName('split')} ${o.split}: no such split in ${o.cache} (have: ${(await cache.splits()).join(', ') || 'none'})`,
      );
    const set = await loadSplit(cache, o.split);
    const classes = cache.manifest.classes;
    const m = classes.length;
    const dim = set.dim;
    const keep = [...set.labels.keys()].filter((r) => set.labels[r]! >= 0);
    if (keep.length < 2 || m < 2)
      throw new FeatcacheError(
        `${optionName('split')} ${o.split}: an audit needs labelled rows of at least two classes (${keep.length} labelled rows, ${m} classes)`,
      );
    const notes: string[] = [];
    if (keep.length < set.count) notes.push(`${set.count - keep.length} unlabelled rows are not audited`);
    const split = labelledRows(set.features, set.labels, keep, dim);
    const files = await imageFiles(cache, set, o.data);
    const result = await auditRows(
      {
        ...split,
        dim,
        paths: keep.map((r) => set.paths[r]!),
        files: keep.map((r) => files[r]!),
        rows: keep,
        classes,
      },
      { ...o, log },
    );
    result.split = o.split;
    result.notes.unshift(...notes);
    if (outDir) {
      const files = await outputFiles(result, o, cache.manifest, Float64Array.from(result.noiseMatrix));
      for (const [name, content] of Object.entries(files)) await fs.writeFile(outDir.file(name), content);
      await outDir.commit();
      result.written.push(...Object.keys(files).map((f) => path.join(o.out!, f)));
    }
    if (o.labelsOut !== null) {
      const labels = result.all.map((a) => (a.confidentLearning && a.suggested !== null ? a.suggested : a.given));
      await writeLabelsOut(
        o.labelsOut,
        labelsCsv(
          result.all.map((a) => a.path),
          labels,
        ),
      );
      result.written.push(o.labelsOut);
    }
    result.seconds = (performance.now() - started) / 1000;
    return result;
  } catch (error) {
    await outDir?.abort();
    throw error;
  }
}

export interface AuditRowsInput extends Split {
  dim: number;
  paths: string[];
  /** Each row's image file, for the report's thumbnails (null or absent: none). */
  files?: (string | null)[];
  /** Each row's index in the cached split (reported as `row`). */
  rows: number[];
  classes: string[];
}

/**
 * The audit's method on labelled rows in memory (what the job reads from the cache): cross-fitted probabilities,
 * confident learning, the kNN consensus and the outlier scores. Writes nothing.
 */
export async function auditRows(
  split: AuditRowsInput,
  o: Omit<AuditOptions, 'cache' | 'split' | 'out' | 'data' | 'labelsOut' | 'reportLimit'>,
): Promise<AuditResult> {
  const started = performance.now();
  const { classes, dim, paths } = split;
  const m = classes.length;
  const log = o.log ?? (() => {});
  const notes: string[] = [];
  log(`audit: ${split.count} rows × ${dim} dims, ${m} classes`);

  const fit = await crossFitProbabilities(split, dim, m, {
    grid: o.grid,
    holdoutFraction: o.holdoutFraction,
    seed: o.seed,
    classWeight: o.classWeight,
    keys: paths,
    classNames: classes,
    // Past the probe's limit train-head sweeps C on a subsample of SUBSAMPLE_WORK multiply-adds: so does the audit.
    selectionRows: split.count * dim * m > PROBE_WORK_LIMIT ? Math.floor(SUBSAMPLE_WORK / (dim * m)) : null,
    log,
  });
  notes.push(...fit.notes);
  for (const n of fit.notes) log(`audit: ${n}`);
  log(
    `audit: cross-fitted ${fit.folds} folds, out-of-sample accuracy ${fit.accuracy.toFixed(4)} against the given labels (T = ${fit.temperature.toFixed(3)} fitted on all rows)`,
  );

  const scoredRows = [...fit.scored.keys()].filter((r) => fit.scored[r] === 1);
  const scoredLogits = new Float32Array(scoredRows.length * m);
  scoredRows.forEach((r, i) => scoredLogits.set(fit.logits.subarray(r * m, (r + 1) * m), i * m));
  const scoredLabels = Int32Array.from(scoredRows, (r) => split.labels[r]!);
  const calibration = calibrateOnKeptLabels(scoredLogits, scoredLabels, m, o.filterBy);
  log(
    `audit: temperature refitted on the rows confident learning keeps: ${calibration.rounds.map((c) => `T ${c.temperature.toFixed(3)} → ${c.flagged} flagged`).join(', ')}${calibration.settled ? '' : ' (the flags cycle or hit the round cap; the last round is used)'}`,
  );
  const p = calibration.probabilities;
  const probabilities = new Float32Array(split.count * m).fill(NaN);
  scoredRows.forEach((r, i) => probabilities.set(p.subarray(i * m, (i + 1) * m), r * m));
  const cl = confidentLearning(p, scoredLabels, m, o.filterBy);
  const quality = labelQuality(p, scoredLabels, m, o.rank);
  const selfConfidence = labelQuality(p, scoredLabels, m, 'self_confidence');
  const entropy = normalisedEntropy(p, m);
  const clFlag = new Uint8Array(split.count);
  for (const i of cl.flagged) clFlag[scoredRows[i]!] = 1;

  const kStarted = performance.now();
  const neighbours = await splitNeighbours(split.features, split.count, dim, o.k);
  const consensus = knnConsensus(neighbours, split.labels, m);
  const distance = meanNeighbourDistance(neighbours, split.count);
  const fence = tukeyFence(distance, o.iqrFence);
  const knnSeconds = (performance.now() - kStarted) / 1000;
  log(`audit: ${o.k} nearest neighbours of every row in ${((performance.now() - kStarted) / 1000).toFixed(1)} s`);

  const byRow = new Map(scoredRows.map((r, i) => [r, i]));
  const all: AuditIssue[] = paths.map((file, r) => {
    const i = byRow.get(r);
    const given = split.labels[r]!;
    const knnFlag = consensus.disagreement[r]! > o.knnThreshold;
    const suggested =
      i !== undefined && clFlag[r] ? suggestedLabel(p, i, given, m) : knnFlag ? consensus.majority[r]! : null;
    return {
      row: split.rows[r]!,
      path: file,
      file: split.files?.[r] ?? null,
      given: classes[given]!,
      suggested: suggested === null ? null : classes[suggested]!,
      labelQuality: i === undefined ? null : quality[i]!,
      selfConfidence: i === undefined ? null : selfConfidence[i]!,
      confidentLearning: clFlag[r] === 1,
      knnDisagreement: consensus.disagreement[r]!,
      knnMajority: classes[consensus.majority[r]!]!,
      knnFlag,
      meanNeighbourDistance: distance[r]!,
      distanceOutlier: distance[r]! > fence,
      entropy: i === undefined ? null : entropy[i]!,
      flat: i !== undefined && entropy[i]! >= o.entropyThreshold,
    };
  });
  const labelIssues = rankLabelIssues(all.filter((a) => a.confidentLearning || a.knnFlag));
  const outliers = rankOutliers(all.filter((a) => a.distanceOutlier || a.flat));
  const confused = confusedPairs(cl.joint, classes, scoredRows.length, scoredLabels);
  const counts = {
    confidentLearning: all.filter((a) => a.confidentLearning).length,
    knn: all.filter((a) => a.knnFlag).length,
    both: all.filter((a) => a.confidentLearning && a.knnFlag).length,
    distanceOutliers: all.filter((a) => a.distanceOutlier).length,
    flat: all.filter((a) => a.flat).length,
  };
  log(
    `audit: ${counts.confidentLearning} label issues by confident learning, ${counts.knn} by the neighbours, ${counts.both} by both; ${counts.distanceOutliers} far from all (mean distance > ${fence.toFixed(4)}), ${counts.flat} unlike any class`,
  );
  const result: AuditResult = {
    split: '',
    rows: split.count,
    classes,
    scoredRows: scoredRows.length,
    crossFit: {
      folds: fit.folds,
      c: fit.c,
      normalize: fit.normalize,
      temperature: calibration.temperature,
      selectionRows: fit.selectionRows,
      temperatureAllRows: fit.temperature,
      calibrationRounds: calibration.rounds,
      accuracy: fit.accuracy,
      seconds: fit.seconds,
    },
    knnSeconds,
    counts,
    distanceFence: fence,
    noiseMatrix: Array.from(cl.noiseMatrix),
    confused,
    labelIssues,
    outliers,
    all,
    probabilities,
    notes,
    written: [],
    seconds: 0,
  };
  result.seconds = (performance.now() - started) / 1000;
  return result;
}

/**
 * Where each row's image is, for the thumbnails: under --data when given (data moved since extract), else where
 * extract read it (the data root its part recorded).
 */
async function imageFiles(cache: FeatureCache, set: SplitRows, data: string | null): Promise<(string | null)[]> {
  if (data === null) return rowImageFiles(cache, set);
  return set.paths.map((p) => (/^[a-z][a-z0-9+.-]*:\/\//i.test(p) ? null : path.join(data, p)));
}

function labelledRows(features: Float32Array, labels: Int32Array, keep: number[], dim: number): Split {
  if (keep.length === labels.length) return { features, labels, count: labels.length };
  const out = new Float32Array(keep.length * dim);
  keep.forEach((r, i) => out.set(features.subarray(r * dim, (r + 1) * dim), i * dim));
  return { features: out, labels: Int32Array.from(keep, (r) => labels[r]!), count: keep.length };
}

const tier = (a: AuditIssue) => (a.confidentLearning && a.knnFlag ? 0 : a.confidentLearning ? 1 : 2);

/** Both flags first, then confident learning alone, then the neighbours alone; within each, worst label first. */
export function rankLabelIssues(issues: AuditIssue[]): AuditIssue[] {
  return [...issues].sort(
    (a, b) =>
      tier(a) - tier(b) ||
      (a.labelQuality ?? Infinity) - (b.labelQuality ?? Infinity) ||
      b.knnDisagreement - a.knnDisagreement ||
      a.row - b.row,
  );
}

export function rankOutliers(issues: AuditIssue[]): AuditIssue[] {
  const t = (a: AuditIssue) => (a.distanceOutlier && a.flat ? 0 : a.distanceOutlier ? 1 : 2);
  return [...issues].sort(
    (a, b) =>
      t(a) - t(b) ||
      b.meanNeighbourDistance - a.meanNeighbourDistance ||
      (b.entropy ?? 0) - (a.entropy ?? 0) ||
      a.row - b.row,
  );
}

/** Off-diagonal cells of the joint worth half a row or more, as estimated rows (n·Q) and share of the given class. */
function confusedPairs(joint: Float64Array, classes: string[], n: number, labels: Int32Array): ConfusedPair[] {
  const m = classes.length;
  const counts = new Float64Array(m);
  for (const y of labels) counts[y]! += 1;
  const pairs: ConfusedPair[] = [];
  for (let i = 0; i < m; i++)
    for (let j = 0; j < m; j++) {
      const rows = n * joint[i * m + j]!;
      if (i !== j && rows >= 0.5)
        pairs.push({
          given: classes[i]!,
          likelyTrue: classes[j]!,
          estimatedRows: rows,
          shareOfGiven: counts[i]! > 0 ? rows / counts[i]! : 0,
        });
    }
  return pairs.sort((a, b) => b.estimatedRows - a.estimatedRows).slice(0, 50);
}

async function outputFiles(
  r: AuditResult,
  o: AuditOptions,
  manifest: FeatureCache['manifest'],
  noise: Float64Array,
): Promise<Record<string, string>> {
  const summaryLines = summary(r);
  const provenance = {
    modelSha256: manifest.modelSha256,
    modelFile: manifest.modelFile,
    tappedTensor: manifest.tappedTensor,
    preset: manifest.preset.name,
    precision: manifest.precision ?? 'fp32',
    cache: path.resolve(o.cache),
    split: o.split,
    auditedAt: new Date().toISOString(),
    versions: toolVersions(),
  };
  const { probabilities: _p, all: _a, ...json } = r;
  const options = { ...o, log: undefined };
  return {
    'report.html': await reportHtml({
      title: `featcache audit: ${o.split} (${r.rows} images, ${r.classes.length} classes)`,
      summaryLines,
      classes: r.classes,
      noiseMatrix: noise,
      confused: r.confused,
      labelIssues: r.labelIssues,
      outliers: r.outliers,
      limit: o.reportLimit,
    }),
    'audit.json': `${JSON.stringify({ provenance, options, ...json }, null, 2)}\n`,
    'label-issues.csv': issuesCsv(r.labelIssues),
    'outliers.csv': issuesCsv(r.outliers),
    'scores.csv': issuesCsv(r.all),
    'noise-matrix.csv': noiseMatrixCsv(r.classes, noise),
  };
}

/** The audit in a few lines: what was fitted, how many of each issue, which classes hold which. */
export function summary(r: AuditResult): string[] {
  const c = r.counts;
  return [
    `${r.rows} rows of ${r.split}, ${r.classes.length} classes; ${r.scoredRows} scored out of sample by ${r.crossFit.folds}-fold cross-fitting of the probe (C ${r.crossFit.c}, ${r.crossFit.normalize}, T ${r.crossFit.temperature.toFixed(3)} fitted on the rows confident learning keeps; ${r.crossFit.temperatureAllRows.toFixed(3)} on all), accuracy against the given labels ${r.crossFit.accuracy.toFixed(4)}.`,
    `Label issues: ${c.confidentLearning} by confident learning (prune by noise rate), ${c.knn} by the neighbours' consensus, ${c.both} by both.`,
    `Outliers: ${c.distanceOutliers} far from all others (mean distance to the nearest neighbours above Q3 + IQR fence = ${r.distanceFence.toFixed(4)}), ${c.flat} unlike any class (flat prediction).`,
    ...r.confused
      .slice(0, 5)
      .map(
        (p) =>
          `About ${p.estimatedRows.toFixed(1)} images labelled ${p.given} look like ${p.likelyTrue} (${(100 * p.shareOfGiven).toFixed(1)}% of ${p.given}).`,
      ),
    ...r.notes,
  ];
}

async function readSidecar(file: string): Promise<{ writtenBy: string; sha256: string } | null> {
  try {
    return JSON.parse(await fs.readFile(file + LABELS_SIDECAR, 'utf8')) as { writtenBy: string; sha256: string };
  } catch {
    return null;
  }
}

/** An existing --labels-out file is replaced only if featcache wrote it and nobody edited it since. */
async function checkLabelsOut(file: string): Promise<void> {
  const current = await fs.readFile(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return null;
    throw new FeatcacheError(`${optionName('labelsOut')} ${file}: cannot read (${error.code}); nothing was written`);
  });
  if (current === null) return;
  const sidecar = await readSidecar(file);
  if (sidecar?.writtenBy !== 'featcache' || sidecar.sha256 !== sha256Bytes(current))
    throw invalidParameter(
      'labelsOut',
      'a new file, or one an earlier audit wrote and nobody has edited since',
      `${file}, which exists${sidecar ? ' and was edited after featcache wrote it' : ' and was not written by featcache'}; choose another name`,
    );
}

async function writeLabelsOut(file: string, content: string): Promise<void> {
  await writeOutputFile(file, content, 'labelsOut');
  const sha256 = createHash('sha256').update(content).digest('hex');
  await writeOutputFile(
    file + LABELS_SIDECAR,
    `${JSON.stringify({ writtenBy: 'featcache', sha256, note: 'featcache audit --labels-out wrote the file beside this one' })}\n`,
    'labelsOut',
  );
}
