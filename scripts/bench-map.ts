/**
 * The map's layout at scale: 100 k synthetic clustered rows (scripts/synthetic-cache.ts, 64 dims, 50 classes) laid out
 * by UMAP from the cached kNN graph, against baselines measured in the same run: building that graph (the
 * neighbours engine's exact search), umap-learn laying out the same graph (Debian's python3-umap-learn, if present),
 * and umap-js 1.4.0 against ours on a 10 k graph (the design choice in README, "Map"). Each step runs in its own
 * child process, so its peak RSS is its own. BENCH_QUICK=1: 20 k rows, umap-js on 5 k.
 *
 * `node dist/scripts/bench-map.js` prints the JSON report; `npm run bench` runs it as its `map` section.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UMAP } from 'umap-js';
import { mapLayout } from '../src/map/layout.js';
import { defaultEpochs, umapLayout } from '../src/map/umap.js';
import { knnGraph } from '../src/neighbors/search.js';
import { loadSplit } from '../src/neighbors/split.js';
import { FeatureCache } from '../src/store/reader.js';
import { seededRandom } from '../src/util/random.js';
import { writeSyntheticCache } from './synthetic-cache.js';

const self = fileURLToPath(import.meta.url);
const here = path.dirname(self);
const K = 15;
const python = '/usr/bin/python3';

const peakRssMb = () => Math.round(process.resourceUsage().maxRSS / 1024);

/** Child process: one step on the cache; its result, wall time and peak RSS as JSON on stdout. */
async function child(step: string, cacheDir: string, extra: string | undefined): Promise<void> {
  const started = performance.now();
  let result: Record<string, unknown> = {};
  if (step === 'graph') {
    const g = await knnGraph({ cache: cacheDir, split: 'train', k: K, metric: 'cosine' });
    result = { method: g.method, cached: g.cached, points: g.paths.length };
  } else if (step === 'layout') {
    const cache = await FeatureCache.open(cacheDir);
    const rows = await loadSplit(cache, 'train');
    const loaded = performance.now();
    const layout = await mapLayout(cache, [rows], { k: K });
    result = {
      cached: layout.cached,
      points: layout.x.length,
      epochs: layout.provenance.umap.epochs,
      layoutSeconds: layout.seconds,
      loadSeconds: (loaded - started) / 1000,
    };
    if (extra) {
      // The features and the graph for umap-learn, in its own process after this one.
      await fs.writeFile(
        path.join(extra, 'features.f32'),
        Buffer.from(rows.features.buffer, rows.features.byteOffset, rows.count * rows.dim * 4),
      );
      result.dim = rows.dim;
    }
  } else if (step === 'umap-js' || step === 'ours-small') {
    const g = await knnGraph({ cache: cacheDir, split: 'train', k: K, metric: 'cosine' });
    const n = g.paths.length;
    const t = performance.now();
    if (step === 'ours-small') umapLayout({ count: n, k: K, indices: g.indices, distances: g.distances }, { seed: 0 });
    else {
      // umap-js expects the point itself in column 0, as umap-learn does.
      const indices = Array.from({ length: n }, (_, i) => [i, ...g.indices.subarray(i * K, (i + 1) * K)]);
      const distances = Array.from({ length: n }, (_, i) => [0, ...g.distances.subarray(i * K, (i + 1) * K)]);
      // Same epochs as ours (umap-js would pick 200 at 10 k where umap-learn, and so the map, picks 500).
      const umap = new UMAP({ nNeighbors: K + 1, random: seededRandom(0), nEpochs: defaultEpochs(n) });
      umap.setPrecomputedKNN(indices, distances);
      const epochs = umap.initializeFit(Array.from({ length: n }, () => []));
      for (let e = 0; e < epochs; e++) umap.step();
    }
    result = { points: n, layoutSeconds: (performance.now() - t) / 1000 };
  }
  process.stdout.write(
    `${JSON.stringify({ ...result, seconds: (performance.now() - started) / 1000, peakRssMb: peakRssMb() })}\n`,
  );
}

type Step = Record<string, unknown> & { seconds: number; peakRssMb: number };

function run(step: string, cache: string, log: (l: string) => void, extra?: string): Step {
  log(`bench-map: ${step}`);
  const r = spawnSync(process.execPath, [self, step, cache, ...(extra ? [extra] : [])], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  if (r.status !== 0) throw new Error(`${step} failed: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Step;
}

async function syntheticCache(dir: string, rows: number): Promise<string> {
  const cache = path.join(dir, `features-${rows}`);
  await writeSyntheticCache(cache, { rows, valRows: 0, dim: 64, classes: 50, partRows: 10_000, seed: 5, noise: 0.8 });
  return cache;
}

async function umapLearn(
  cache: string,
  work: string,
  points: number,
  dim: number,
  epochs: number,
): Promise<Record<string, unknown>> {
  if (spawnSync(python, ['-c', 'import umap'], { encoding: 'utf8' }).status !== 0)
    return { skipped: `needs ${python} with umap-learn (apt-get install python3-umap-learn)` };
  const meta = JSON.parse(
    await fs.readFile(path.join(cache, 'train', 'neighbors', `graph-cosine-k${K}.json`), 'utf8'),
  ) as { file: string };
  const r = spawnSync(
    python,
    [
      path.join(here, '..', '..', 'scripts', 'bench_map_umap_learn.py'),
      path.join(work, 'features.f32'),
      String(dim),
      path.join(cache, 'train', 'neighbors', meta.file),
      String(points),
      String(K),
      String(epochs),
    ],
    { encoding: 'utf8', maxBuffer: 1 << 26 },
  );
  if (r.status !== 0) return { error: r.stderr.slice(-1000) };
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

export async function benchMap(opts: { quick: boolean; log: (l: string) => void }): Promise<Record<string, unknown>> {
  const points = opts.quick ? 20_000 : 100_000;
  const smallPoints = opts.quick ? 5_000 : 10_000;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-map-'));
  try {
    const loadBefore = os.loadavg();
    const cache = await syntheticCache(dir, points);
    const graph = run('graph', cache, opts.log);
    const layout = run('layout', cache, opts.log, dir);
    const reuse = run('layout', cache, opts.log);
    const learn = await umapLearn(cache, dir, points, layout.dim as number, layout.epochs as number);
    const small = await syntheticCache(dir, smallPoints);
    run('graph', small, opts.log);
    const oursSmall = run('ours-small', small, opts.log);
    const umapJs = run('umap-js', small, opts.log);
    const layoutSeconds = layout.layoutSeconds as number;
    return {
      points,
      dim: 64,
      k: K,
      epochs: layout.epochs,
      machine: { cpuModel: os.cpus()[0]?.model.trim(), cpus: os.availableParallelism() },
      load: { before: loadBefore, after: os.loadavg(), note: 'shared machine: other jobs ran beside this one' },
      graphBuild: graph,
      layoutFromCachedGraph: layout,
      layoutReused: reuse,
      umapLearnSameGraph: learn,
      layoutOverGraphBuild: layoutSeconds / graph.seconds,
      ...(typeof learn.seconds === 'number' ? { umapLearnOverOurs: learn.seconds / layoutSeconds } : {}),
      small: {
        points: smallPoints,
        ours: oursSmall,
        umapJs,
        umapJsOverOurs: (umapJs.layoutSeconds as number) / (oursSmall.layoutSeconds as number),
      },
      goal: `${points} points laid out from a cached kNN graph in ≤ 300 s`,
      goalMet: layoutSeconds <= 300,
    };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === self) {
  if (process.argv[2]) await child(process.argv[2], process.argv[3]!, process.argv[4]);
  else {
    const report = await benchMap({
      quick: process.env.BENCH_QUICK === '1',
      log: (l) => process.stderr.write(`${l}\n`),
    });
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  }
}
