/**
 * Benchmark `head-scale`: the default `featcache train-head --cache C` (no other flags, as a new user runs it) on
 * synthetic clustered post-ReLU-like caches of growing size, each in its own process (wall time and peak RSS from
 * /usr/bin/time), against scikit-learn's LogisticRegression at the C and normalisation train-head chose, on the same
 * features (Debian /usr/bin/python3; sizes up to SKLEARN_MAX_ROWS).
 *   node dist/scripts/bench-head-scale.js [ROWSxDIMxCLASSES ...]   prints one JSON object
 * Default sizes are the (10k, 100k × 2048 × 100; 1M × 2048 × 1000); BENCH_QUICK=1 runs small ones.
 * BENCH_HEAD_SCALE_SOLVERS=lbfgs,stream runs each size once per solver (the in-memory probe against the streamed
 * path, for PROBE_WORK_LIMIT's crossover); the default is the default (`auto`, no --solver flag).
 * BENCH_HEAD_SCALE_SKLEARN=0 skips scikit-learn.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FeatureCache } from '../src/store/reader.js';
import { writeSyntheticCache } from './synthetic-cache.js';

const self = fileURLToPath(import.meta.url);
const repo = path.resolve(path.dirname(self), '../..');
const cli = path.join(repo, 'dist/src/cli.js');
const python = '/usr/bin/python3';
const SKLEARN_MAX_ROWS = 100_000;

interface Size {
  rows: number;
  dim: number;
  classes: number;
}

const parseSize = (s: string): Size => {
  const [rows, dim, classes] = s.split('x').map(Number);
  return { rows: rows!, dim: dim ?? 2048, classes: classes ?? 100 };
};

/** Raw float32/int32 copies of a split for numpy. */
async function rawSplit(cache: FeatureCache, split: string, dir: string): Promise<void> {
  const set = await cache.read(split);
  await fs.writeFile(path.join(dir, `${split}.f32`), Buffer.from(set.features.buffer));
  await fs.writeFile(path.join(dir, `${split}.labels`), Buffer.from(set.labels.buffer));
}

const loadAverage = () => os.loadavg().map((l) => Math.round(l * 100) / 100);

/** One featcache train-head in a child process under /usr/bin/time: its --json result, wall time and peak RSS. */
function trainHeadRun(cache: string, head: string, solver: string): Record<string, unknown> {
  const load = loadAverage();
  const r = spawnSync(
    '/usr/bin/time',
    [
      '-f',
      'TIME %M %e',
      process.execPath,
      cli,
      'train-head',
      '--cache',
      cache,
      '--head',
      head,
      '--json',
      ...(solver === 'auto' ? [] : ['--solver', solver]),
    ],
    { encoding: 'utf8', maxBuffer: 256 * 2 ** 20 },
  );
  const timeLine = /TIME (\d+) ([\d.]+)/.exec(r.stderr ?? '');
  if (r.status !== 0 || !timeLine)
    return { solverFlag: solver, error: (r.stderr ?? '').slice(-2000), loadAverageAtStart: load };
  const result = JSON.parse(r.stdout) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  return {
    solverFlag: solver,
    loadAverageAtStart: load,
    loadAverageAtEnd: loadAverage(),
    solver: result.setting.solver,
    why: result.scale?.why ?? null,
    c: result.setting.c,
    normalize: result.setting.normalize,
    wallS: Number(timeLine[2]),
    peakRssMb: Math.round(Number(timeLine[1]) / 1024),
    memoryBudgetMb: result.scale?.memoryBudgetMb ?? null,
    secondsPerEpoch: result.secondsPerEpoch,
    stages: result.stages,
    subsampleRows: result.scale?.subsampleRows ?? null,
    refit: result.scale?.refit ?? null,
    trainRows: result.trainRows,
    valTop1: result.metrics.top1,
    valEceBefore: result.calibration.before.ece,
    valEce: result.calibration.after.ece,
    valNllBefore: result.calibration.before.nll,
    valNll: result.calibration.after.nll,
    temperature: result.temperature,
  };
}

async function writeBenchCache(cache: string, size: Size, log: (l: string) => void): Promise<void> {
  const started = performance.now();
  // Noise 12 gave 20% top-1 at 2048 × 100 (far too hard); lower noise separates the classes more.
  await writeSyntheticCache(cache, {
    rows: size.rows,
    valRows: Math.min(20_000, Math.round(size.rows / 5)),
    dim: size.dim,
    classes: size.classes,
    partRows: 4096,
    seed: 1,
    noise: Number(process.env.BENCH_HEAD_SCALE_NOISE ?? 6),
  });
  log(
    `head-scale: ${size.rows} × ${size.dim} × ${size.classes}: cache written in ${((performance.now() - started) / 1000).toFixed(0)} s`,
  );
}

/** A kept cache is reused only if a previous run finished writing it (the marker is written last). */
async function reuseOrWriteCache(cache: string, size: Size, log: (l: string) => void): Promise<void> {
  const marker = path.join(path.dirname(cache), 'written.json');
  const spec = JSON.stringify({ ...size, noise: Number(process.env.BENCH_HEAD_SCALE_NOISE ?? 6) });
  const previous = await fs.readFile(marker, 'utf8').catch(() => null);
  if (previous === spec) return log(`head-scale: reusing ${cache}`);
  // Never remove what this bench cannot prove it wrote: a folder without the marker must be emptied by hand.
  const entries = await fs.readdir(path.dirname(cache)).catch(() => []);
  if (entries.length > 0)
    throw new Error(
      `BENCH_HEAD_SCALE_DIR: ${path.dirname(cache)} is not a finished bench cache; remove it or pick another`,
    );
  await fs.mkdir(path.dirname(cache), { recursive: true });
  await writeBenchCache(cache, size, log);
  await fs.writeFile(marker, spec);
}

async function runSize(size: Size, log: (l: string) => void): Promise<Record<string, unknown>> {
  // BENCH_HEAD_SCALE_DIR keeps each size's cache (minutes to write at 1 M rows) for the next run of the same size.
  const keepRoot = process.env.BENCH_HEAD_SCALE_DIR;
  const dir = keepRoot
    ? path.join(path.resolve(keepRoot), `${size.rows}x${size.dim}x${size.classes}`)
    : await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-head-scale-'));
  try {
    const cache = path.join(dir, 'features');
    await (keepRoot ? reuseOrWriteCache : writeBenchCache)(cache, size, log);
    const solvers = (process.env.BENCH_HEAD_SCALE_SOLVERS ?? 'auto').split(',');
    const heads = solvers.map((solver) => {
      const run = trainHeadRun(cache, path.join(dir, `head-${solver}`), solver);
      log(`head-scale: featcache ${JSON.stringify(run)}`);
      return run;
    });
    const out: Record<string, unknown> = { ...size, totalMemoryGb: Math.round(os.totalmem() / 2 ** 30), heads };
    const first = heads[0]!;
    const wantSklearn = process.env.BENCH_HEAD_SCALE_SKLEARN !== '0';
    if (wantSklearn && size.rows <= SKLEARN_MAX_ROWS && typeof first.c === 'number') {
      const raw = path.join(dir, 'raw');
      await fs.mkdir(raw);
      const reader = await FeatureCache.open(cache);
      await rawSplit(reader, 'train', raw);
      await rawSplit(reader, 'val', raw);
      await fs.writeFile(path.join(raw, 'meta.json'), JSON.stringify({ dim: size.dim }));
      const py = spawnSync(
        python,
        [path.join(repo, 'scripts/head_scale_sklearn.py'), raw, String(first.c), String(first.normalize)],
        {
          encoding: 'utf8',
        },
      );
      if (py.status === 0) {
        const sk = JSON.parse(py.stdout.trim()) as { valAcc: number; seconds: number };
        out.sklearn = { ...sk, loadAverageAtEnd: loadAverage() };
        for (const h of heads) h.accDifferencePoints = (Number(h.valTop1) - sk.valAcc) * 100;
      } else out.sklearn = { error: py.stderr.slice(-500) };
    }
    return out;
  } finally {
    if (!keepRoot) await fs.rm(dir, { recursive: true, force: true });
  }
}

export async function benchHeadScale(opts: {
  quick: boolean;
  log: (l: string) => void;
}): Promise<Record<string, unknown>> {
  const args = process.argv.slice(2).filter((a) => /^\d+(x\d+){0,2}$/.test(a));
  const sizes =
    args.length > 0
      ? args.map(parseSize)
      : opts.quick
        ? [parseSize('5000x512x20'), parseSize('20000x512x20')]
        : [parseSize('10000x2048x100'), parseSize('100000x2048x100'), parseSize('1000000x2048x1000')];
  const runs: Record<string, unknown>[] = [];
  for (const size of sizes) runs.push(await runSize(size, opts.log));
  return { cpuModel: os.cpus()[0]?.model.trim(), cores: os.cpus().length, runs };
}

if (process.argv[1] && path.resolve(process.argv[1]) === self) {
  const result = await benchHeadScale({
    quick: process.env.BENCH_QUICK === '1',
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
