/**
 * POST /similar's cost next to /predict's (loopback, bounded in requests): MobileNetV2-int8 on monkeys, the reference
 * split cached by extract, one server with --similar-split and one without, the same images to both. Reports served
 * images/s and p50 at concurrency 1 and 8 as ratios measured in the same run (the three loads interleaved): /similar over /predict on the same
 * server, and /predict with the extra feature output over /predict without it.
 * Runnable alone: `node dist/scripts/bench-serve-similar.js` prints JSON (BENCH_QUICK=1: validation as reference,
 * fewer requests).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { extract } from '../src/jobs/extract.js';
import { FeatureCache } from '../src/store/reader.js';
import { loadTf } from '../src/head/runtime.js';
import { type HeadInfo, saveHead } from '../src/head/saved.js';
import { sha256File } from '../src/util/fsx.js';
import { seededRandom } from '../src/util/random.js';
import { toolVersions } from '../src/version.js';
import { startServer } from './bench-serve.js';

const self = fileURLToPath(import.meta.url);
const repo = path.resolve(path.dirname(self), '../..');
const shared = path.resolve(repo, '../shared');
const mobilenet = path.join(shared, 'models/mobilenetv2-12-int8.onnx');
const monkeys = path.join(shared, 'data/monkeys');
const threads = Math.min(os.availableParallelism(), 2);

/** A seeded random head over the cache's own tap and preset: serving cost does not depend on what it learnt. */
async function headFor(dir: string, cache: FeatureCache): Promise<string> {
  const m = cache.manifest;
  const random = seededRandom(1);
  const info = {
    format: 1,
    classes: ['a', 'b'],
    normalization: { kind: 'l2' },
    provenance: {
      modelSha256: await sha256File(mobilenet),
      modelFile: mobilenet,
      tappedTensor: m.tappedTensor,
      preset: m.preset,
      exif: m.exif,
      icc: m.icc,
      dim: m.dim,
      cache: cache.dir,
      trainedAt: new Date().toISOString(),
      backend: 'cpu',
      backendSkipped: [],
      versions: toolVersions(),
    },
    options: {},
    bestEpoch: 1,
    summary: {},
  } as unknown as HeadInfo;
  const layers = [
    {
      kernel: Float32Array.from({ length: m.dim * 2 }, () => random() - 0.5),
      shape: [m.dim, 2] as [number, number],
      bias: new Float32Array(2),
      activation: 'softmax' as const,
    },
  ];
  const { tf } = await loadTf('cpu');
  await saveHead(tf, dir, { info, layers, extras: {} });
  return dir;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** `total` requests from `concurrency` clients: each one's latency, the wall time, and how many were not a 200. */
async function load(url: string, route: string, bodies: Buffer[], total: number, concurrency: number) {
  let next = 0;
  const latencies: number[] = [];
  let failed = 0;
  const started = performance.now();
  const client = async () => {
    while (next < total) {
      const i = next++;
      const t = performance.now();
      const response = await fetch(new URL(route, url), {
        method: 'POST',
        body: bodies[i % bodies.length]! as unknown as BodyInit,
      });
      await response.arrayBuffer();
      if (response.status !== 200) failed++;
      latencies.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  return { latencies, seconds: (performance.now() - started) / 1000, failed };
}

interface Tally {
  latencies: number[];
  seconds: number;
  failed: number;
}

const summary = (t: Tally) => ({
  requests: t.latencies.length,
  failed: t.failed,
  imagesPerSecond: t.latencies.length / t.seconds,
  p50Ms: median(t.latencies),
});

export async function benchServeSimilar(opts: {
  quick: boolean;
  log: (l: string) => void;
}): Promise<Record<string, unknown>> {
  const { quick, log } = opts;
  for (const f of [mobilenet, monkeys]) if (!(await fs.stat(f).catch(() => null))) return { skipped: `needs ${f}` };
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-serve-similar-'));
  try {
    const split = quick ? 'validation' : 'training';
    log(`bench-serve-similar: extracting monkeys ${split} (the reference)`);
    const cacheDir = path.join(work, 'features');
    await extract({ data: monkeys, split, model: mobilenet, tap: 'avgpool', cache: cacheDir, device: 'cpu', threads });
    const cache = await FeatureCache.open(cacheDir);
    const rows = (await cache.read(split)).count;
    const head = await headFor(path.join(work, 'head'), cache);
    // Queries: validation images (not in the training reference).
    const queryDir = path.join(monkeys, 'validation', 'n1');
    const files = (await fs.readdir(queryDir)).sort().slice(0, 16);
    const bodies = await Promise.all(files.map((f) => fs.readFile(path.join(queryDir, f))));
    const levels = quick
      ? [
          [1, 16],
          [8, 32],
        ]
      : [
          [1, 48],
          [8, 128],
        ];
    const common = ['--head', head, '--max-batch', '16', '--max-wait-ms', '5'];
    // Both servers up at once and the three loads interleaved in rounds, so a change in the machine's load (shared
    // with other jobs) falls on all three alike instead of on whichever ran last.
    const plain = await startServer(common);
    const withSimilar = await startServer([...common, '--cache', cacheDir, '--similar-split', split]);
    const runs = [
      ['plain.predict', plain.url, 'predict'],
      ['similar.predict', withSimilar.url, 'predict'],
      ['similar.similar', withSimilar.url, 'similar'],
    ] as const;
    const results: Record<string, ReturnType<typeof summary>> = {};
    const rounds = 4;
    try {
      for (const run of runs) await load(run[1], run[2], bodies, 4, 1);
      for (const [concurrency, total] of levels) {
        const tallies = runs.map((): Tally => ({ latencies: [], seconds: 0, failed: 0 }));
        for (let round = 0; round < rounds; round++)
          for (const [i, run] of runs.entries()) {
            const r = await load(run[1], run[2], bodies, Math.ceil(total! / rounds), concurrency!);
            tallies[i]!.latencies.push(...r.latencies);
            tallies[i]!.seconds += r.seconds;
            tallies[i]!.failed += r.failed;
          }
        runs.forEach((run, i) => (results[`${run[0]}.c${concurrency}`] = summary(tallies[i]!)));
        log(`bench-serve-similar: c=${concurrency} done`);
      }
    } finally {
      await plain.stop();
      await withSimilar.stop();
    }
    const ratios: Record<string, number> = {};
    for (const [concurrency] of levels) {
      const get = (key: string) => results[key]!;
      const plain = get(`plain.predict.c${concurrency}`);
      const withFeatures = get(`similar.predict.c${concurrency}`);
      const sim = get(`similar.similar.c${concurrency}`);
      ratios[`similarOverPredictP50C${concurrency}`] = sim.p50Ms / withFeatures.p50Ms;
      ratios[`similarOverPredictThroughputC${concurrency}`] = sim.imagesPerSecond / withFeatures.imagesPerSecond;
      ratios[`predictWithFeaturesOverPlainThroughputC${concurrency}`] =
        withFeatures.imagesPerSecond / plain.imagesPerSecond;
    }
    return {
      model: 'mobilenetv2-12-int8 + random 2-class head',
      reference: { split: `monkeys ${split}`, rows, dim: cache.manifest.dim },
      machine: `${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores, shared with other jobs`,
      loadAverage: os.loadavg().map((l) => Math.round(l * 10) / 10),
      threads,
      ratios,
      results,
    };
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === self) {
  const result = await benchServeSimilar({
    quick: process.env.BENCH_QUICK === '1',
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}
