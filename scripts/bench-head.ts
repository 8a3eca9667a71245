/**
 * Benchmark of train-head's default (sweep, select, calibrate) against scikit-learn's LogisticRegression over a C
 * grid on the same features: MobileNetV2-int8 features of ../shared/data/monkeys, full size and few-shot subsets
 * (k training images per class, the full val split). Both accuracies and both wall times come from the same run.
 *   node dist/scripts/bench-head.js [--quick]     prints one JSON object
 * Features are extracted once with the featcache CLI into $TMPDIR/featcache-bench-head and reused by later runs.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { trainHead } from '../src/jobs/train-head.js';
import { hashScore } from '../src/dataset/split.js';
import { loadTf } from '../src/head/runtime.js';
import { type CacheManifest, ensureManifest, readManifest } from '../src/store/manifest.js';
import { writePart } from '../src/store/part.js';
import { FeatureCache, type FeatureSet } from '../src/store/reader.js';

const self = fileURLToPath(import.meta.url);
const repo = path.resolve(path.dirname(self), '../..');
const shared = path.resolve(repo, '../shared');
const model = path.join(shared, 'models/mobilenetv2-12-int8.onnx');
const monkeys = path.join(shared, 'data/monkeys');
const python = '/usr/bin/python3';
const work = path.join(os.tmpdir(), 'featcache-bench-head');

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/** monkeys names its splits training/validation: a symlinked ImageFolder root gives the usual train/val. */
async function extractMonkeys(log: (l: string) => void): Promise<string> {
  const cache = path.join(work, 'monkeys-mobilenetv2');
  const data = path.join(work, 'monkeys-data');
  await fs.mkdir(data, { recursive: true });
  for (const [link, target] of [
    ['train', 'training'],
    ['val', 'validation'],
  ] as const) {
    if (!(await exists(path.join(data, link)))) await fs.symlink(path.join(monkeys, target), path.join(data, link));
  }
  for (const split of ['train', 'val']) {
    const r = spawnSync(
      process.execPath,
      [
        path.join(repo, 'dist/src/cli.js'),
        'extract',
        '--data',
        data,
        '--split',
        split,
        '--model',
        model,
        '--cache',
        cache,
        '--device',
        'cpu',
        '--json',
      ],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`extract ${split}: ${r.stderr.trim().split('\n').at(-1)}`);
    log(`bench-head: ${split} features ${JSON.parse(r.stdout).extracted > 0 ? 'extracted' : 'reused'} (${cache})`);
  }
  return cache;
}

/** k rows per class, chosen by a seeded hash of the path (all rows when k is null). */
function fewShot(set: FeatureSet, k: number | null, seed: number): number[] {
  const rows = [...set.labels.keys()].filter((r) => set.labels[r]! >= 0);
  if (k === null) return rows;
  const byClass = new Map<number, number[]>();
  for (const r of rows) byClass.set(set.labels[r]!, [...(byClass.get(set.labels[r]!) ?? []), r]);
  return [...byClass.values()]
    .flatMap((list) => list.sort((a, b) => hashScore(seed, set.paths[a]!) - hashScore(seed, set.paths[b]!)).slice(0, k))
    .sort((a, b) => a - b);
}

/** A cache holding the chosen train rows and all val rows, plus the same features as raw files for Python. */
async function taskCache(
  source: FeatureCache,
  manifest: CacheManifest,
  train: FeatureSet,
  val: FeatureSet,
  rows: number[],
  dir: string,
): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
  await ensureManifest(dir, manifest);
  const dim = source.dim;
  for (const [split, set, keep] of [
    ['train', train, rows],
    ['val', val, [...val.labels.keys()]],
  ] as const) {
    await fs.mkdir(path.join(dir, split), { recursive: true });
    const features = new Float32Array(keep.length * dim);
    keep.forEach((r, i) => features.set(set.features.subarray(r * dim, (r + 1) * dim), i * dim));
    const labels = Int32Array.from(keep, (r) => set.labels[r]!);
    await writePart(path.join(dir, split, 'part-bench-000000.arrow'), {
      meta: { split, shard: '0of1', runId: 'bench', dim, failures: [], removed: [], provenance: {} },
      rows: keep.map((r) => ({
        path: set.paths[r]!,
        label: set.labels[r]!,
        labelName: manifest.classes[set.labels[r]!]!,
        size: 1,
        mtimeMs: 1,
      })),
      features,
    });
    await fs.writeFile(path.join(dir, `${split}.f32`), Buffer.from(features.buffer));
    await fs.writeFile(path.join(dir, `${split}.labels`), Buffer.from(labels.buffer));
  }
  await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ dim }));
}

function sklearnAvailable(): string | null {
  const r = spawnSync(python, ['-c', 'import sklearn, numpy'], { encoding: 'utf8' });
  return r.status === 0 ? null : `needs ${python} with scikit-learn and numpy (apt-get install python3-sklearn)`;
}

/** Peak-ish matMul throughput of the head's backend on this machine: the yardstick for the sweep's GFLOP/s. */
async function backendMatMulGflops(): Promise<{ backend: string; gflopsPerSecond: number }> {
  const { tf, backend } = await loadTf('auto');
  const [m, k, n] = [256, 1280, 1200];
  const a = tf.randomNormal([m, k]);
  const b = tf.randomNormal([k, n]);
  tf.tidy(() => tf.matMul(a, b).dataSync());
  const reps = 10;
  const started = performance.now();
  for (let i = 0; i < reps; i++) tf.tidy(() => tf.matMul(a, b).dataSync());
  const seconds = (performance.now() - started) / 1000;
  tf.dispose([a, b]);
  return { backend, gflopsPerSecond: (2 * m * k * n * reps) / seconds / 1e9 };
}

export async function benchHead(opts: { quick: boolean; log: (l: string) => void }): Promise<Record<string, unknown>> {
  if (!(await exists(model)) || !(await exists(monkeys)))
    return { skipped: 'needs ../shared/models/mobilenetv2-12-int8.onnx and ../shared/data/monkeys' };
  await fs.mkdir(work, { recursive: true });
  const cacheDir = await extractMonkeys(opts.log);
  const source = await FeatureCache.open(cacheDir);
  const manifest = (await readManifest(cacheDir))!;
  const [train, val] = [await source.read('train'), await source.read('val')];
  const sklearnSkipped = sklearnAvailable();
  const shots: (number | null)[] = opts.quick ? [3, 10] : [3, 10, null];
  const tasks: Record<string, unknown>[] = [];
  for (const k of shots) {
    const name = k === null ? 'full' : `${k}-shot`;
    const dir = path.join(work, `task-${name}`);
    const rows = fewShot(train, k, 0);
    await taskCache(source, manifest, train, val, rows, dir);
    opts.log(`bench-head: ${name}: ${rows.length} train / ${val.count} val rows`);
    // scikit-learn's grid time starts after Python has imported it; ours starts after TensorFlow.js is loaded.
    await loadTf('auto');
    const started = performance.now();
    const ours = await trainHead({ cache: dir, head: path.join(dir, 'head') });
    const oursSeconds = (performance.now() - started) / 1000;
    const sklearn = sklearnSkipped
      ? null
      : JSON.parse(
          execFileSync(python, [path.join(repo, 'scripts/head_sklearn_baseline.py'), dir], { encoding: 'utf8' }).trim(),
        );
    const task = {
      task: name,
      trainRows: rows.length,
      valRows: val.count,
      featcache: {
        top1: ours.metrics.top1,
        setting: ours.setting,
        method: ours.sweep?.method,
        folds: ours.sweep?.folds,
        candidates: ours.sweep?.candidates.length,
        skipped: ours.sweep?.skipped,
        tied: ours.sweep?.candidates.filter((c) => c.tied).map((c) => `${c.normalize}/C=${c.c}`),
        finalFit: ours.probe,
        temperature: ours.temperature,
        ece: { before: ours.calibration.before.ece, after: ours.calibration.after.ece },
        nll: { before: ours.calibration.before.nll, after: ours.calibration.after.nll },
        sweepSeconds: ours.sweep?.seconds,
        totalSeconds: oursSeconds,
        sweepGflopsPerSecond: ours.sweep?.gflopsPerSecond,
      },
      sklearn: sklearn
        ? {
            best: sklearn.best,
            bestRaw: sklearn.bestRaw,
            bestL2: sklearn.bestL2,
            gridSeconds: sklearn.seconds,
            version: sklearn.sklearn,
          }
        : { skipped: sklearnSkipped },
      top1MinusSklearnBestPoints: sklearn ? 100 * (ours.metrics.top1 - sklearn.best.valAcc) : null,
      sklearnGridSecondsOverOurSweep: sklearn && ours.sweep ? sklearn.seconds / ours.sweep.seconds : null,
      sklearnGridSecondsOverOurTotal: sklearn ? sklearn.seconds / oursSeconds : null,
    };
    opts.log(
      `bench-head: ${name}: featcache ${task.featcache.top1.toFixed(4)} in ${oursSeconds.toFixed(2)} s (sweep ${ours.sweep?.seconds.toFixed(2)} s, ECE ${task.featcache.ece.after.toFixed(3)}); ` +
        (sklearn
          ? `sklearn best ${sklearn.best.valAcc.toFixed(4)} in ${sklearn.seconds.toFixed(2)} s`
          : String(sklearnSkipped)),
    );
    tasks.push(task);
  }
  return {
    data: 'monkeys (10 species), MobileNetV2-int8 avgpool features (1280-d)',
    machine: {
      cpuModel: os.cpus()[0]?.model.trim(),
      cpus: os.availableParallelism(),
      loadAverageAtStart: os.loadavg().map((l) => Math.round(l * 100) / 100),
    },
    featcache:
      'train-head defaults: L-BFGS logistic regression, C in {0.01..1000} x normalisation, chosen on folds of train (never val), refit on all of train, temperature; seconds exclude loading TensorFlow.js',
    sklearnGrid:
      'LogisticRegression(max_iter=1000), C in {0.01, 0.1, 1, 10, 100}, raw and l2-normalised; best by val accuracy (an oracle choice)',
    backendMatMul: await backendMatMulGflops(),
    tasks,
  };
}

if (process.argv[1] === self) {
  const result = await benchHead({
    quick: process.argv.includes('--quick') || process.env.BENCH_QUICK === '1',
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}
