/**
 * Serving benchmark (loopback only, bounded in requests): `featcache serve` on the ResNet50 fixture at concurrency 1,
 * 8 and 32 with autocannon, against extract's images/s and a single forward pass of the same fused model measured
 * in the same run; then a soak of mixed good and malformed requests checking every answer and the server's RSS.
 * Runnable alone: `node dist/scripts/bench-serve.js` prints JSON (BENCH_QUICK=1: fewer requests).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openBundle } from '../src/export/bundle.js';
import { loadTf } from '../src/head/runtime.js';
import { type HeadInfo, saveHead } from '../src/head/saved.js';
import { decodeToRgb, writeNormalised } from '../src/image/preprocess.js';
import { DEFAULT_IMAGE_POLICY, PRESETS } from '../src/image/presets.js';
import { bundle } from '../src/jobs/bundle.js';
import { extract } from '../src/jobs/extract.js';
import { sha256File } from '../src/util/fsx.js';
import { seededRandom } from '../src/util/random.js';
import { toolVersions } from '../src/version.js';

const require = createRequire(import.meta.url);
interface AutocannonResult {
  latency: { p50: number; p99: number; average: number };
  requests: { total: number; average: number };
  duration: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  '2xx': number;
}
type Autocannon = (options: Record<string, unknown>) => Promise<AutocannonResult>;
const autocannon = require('autocannon') as Autocannon;

const self = fileURLToPath(import.meta.url);
const repo = path.resolve(path.dirname(self), '../..');
const shared = path.resolve(repo, '../shared');
const resnet = path.join(shared, 'fixtures/resnet50-tv-seed0/model.onnx');
const mobilenet = path.join(shared, 'models/mobilenetv2-12-int8.onnx');
const hymenoptera = path.join(shared, 'data/hymenoptera_data');
const cli = path.join(repo, 'dist/src/cli.js');
const threads = Math.min(os.availableParallelism(), 2);

/** A head with seeded random weights on `model`'s tapped pool: serving cost does not depend on what it learnt. */
async function randomHead(dir: string, model: string, tappedTensor: string, dim: number): Promise<string> {
  const random = seededRandom(1);
  const classes = ['ants', 'bees'];
  const info = {
    format: 1,
    classes,
    normalization: { kind: 'l2' },
    provenance: {
      modelSha256: await sha256File(model),
      modelFile: model,
      tappedTensor,
      preset: { ...PRESETS.torchvision! },
      exif: 'ignore',
      icc: 'ignore',
      dim,
      cache: 'bench',
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
      kernel: Float32Array.from({ length: dim * 2 }, () => (random() - 0.5) * 4),
      shape: [dim, 2] as [number, number],
      bias: new Float32Array(2),
      activation: 'softmax' as const,
    },
  ];
  const { tf } = await loadTf('cpu');
  await saveHead(tf, dir, { info, layers, extras: {} });
  return dir;
}

export interface Server {
  url: string;
  pid: number;
  stop(): Promise<number | null>;
}

/** `featcache serve` on a free port, CPU, `threads` threads; resolves once it says it is ready. */
export async function startServer(args: string[]): Promise<Server> {
  const child = spawn(
    process.execPath,
    [cli, 'serve', '--port', '0', '--device', 'cpu', '--threads', String(threads), ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (d) => {
      stderr += d;
      const m = /ready in/.test(stderr) && /listening on (\S+)/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${stderr}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    url,
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

async function rssMb(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return Math.round(kb / 1024);
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** A single forward pass of the fused model (batch 1), median of several, in-process like the server's worker. */
async function singleForwardMs(file: string, image: string, runs: number): Promise<number> {
  const model = await openBundle(file, { device: { kind: 'cpu' }, threads });
  const preset = model.preprocessing.preset;
  const rgb = await decodeToRgb(image, preset, DEFAULT_IMAGE_POLICY);
  const times: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    const pixels = new Float32Array(3 * preset.crop * preset.crop);
    writeNormalised(rgb, preset, 'NCHW', pixels, 0);
    const started = performance.now();
    await model.predict(pixels, 1);
    if (i > 0) times.push(performance.now() - started);
  }
  await model.close();
  return median(times);
}

async function images(count: number): Promise<string[]> {
  const files: string[] = [];
  for (const cls of ['ants', 'bees']) {
    const dir = path.join(hymenoptera, 'val', cls);
    files.push(...(await fs.readdir(dir)).sort().map((f) => path.join(dir, f)));
  }
  return files.filter((_, i) => i % Math.max(1, Math.floor(files.length / count)) === 0).slice(0, count);
}

/** Mixed good and malformed requests from `concurrency` clients; every answer is checked against `expected`. */
async function soak(
  url: string,
  pid: number,
  bodies: Buffer[],
  expected: string[],
  total: number,
  concurrency: number,
) {
  let next = 0;
  const wrong: string[] = [];
  let good = 0;
  let bad = 0;
  const rss: number[] = [];
  const started = performance.now();
  const client = async () => {
    while (next < total) {
      const i = next++;
      if (i % Math.max(1, Math.floor(total / 10)) === 0) rss.push(await rssMb(pid));
      const malformed = i % 5 === 0;
      const which = i % bodies.length;
      const body = !malformed
        ? bodies[which]!
        : i % 10 === 0
          ? bodies[which]!.subarray(0, 200)
          : Buffer.from(`not an image #${i}`);
      const response = await fetch(new URL('predict', url), {
        method: 'POST',
        body: body as unknown as BodyInit,
        headers: { 'content-type': 'application/octet-stream' },
      });
      const answer = (await response.json()) as { top?: { label: string; probability: number }[] };
      if (malformed) {
        bad++;
        if (response.status < 400 || response.status >= 500) wrong.push(`#${i} malformed answered ${response.status}`);
      } else {
        good++;
        const got = answer.top?.map((t) => `${t.label}:${t.probability.toFixed(5)}`).join(',');
        if (response.status !== 200 || got !== expected[which])
          wrong.push(`#${i} answered ${response.status} ${got} expected ${expected[which]}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  rss.push(await rssMb(pid));
  const warm = rss[Math.min(1, rss.length - 1)]!;
  return {
    requests: total,
    good,
    malformed: bad,
    wrongAnswers: wrong.length,
    firstWrong: wrong.slice(0, 3),
    seconds: (performance.now() - started) / 1000,
    rssMb: rss,
    rssGrowthAfterWarmup: rss.at(-1)! / warm,
  };
}

export async function benchServe(opts: { quick: boolean; log: (l: string) => void }): Promise<Record<string, unknown>> {
  const { quick, log } = opts;
  for (const f of [resnet, hymenoptera]) {
    if (!(await fs.stat(f).catch(() => null))) return { skipped: `needs ${f}` };
  }
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-serve-'));
  try {
    const sample = await images(quick ? 24 : 64);
    const bodies = await Promise.all(sample.map((f) => fs.readFile(f)));

    // Baseline 1: extract's images/s on the same model, same threads, same images.
    const data = path.join(work, 'data');
    for (const [i, f] of sample.entries()) {
      const cls = path.basename(path.dirname(f));
      await fs.mkdir(path.join(data, cls), { recursive: true });
      await fs.copyFile(f, path.join(data, cls, `${i}-${path.basename(f)}`));
    }
    log('bench-serve: extract baseline');
    const ex = await extract({
      data,
      model: resnet,
      cache: path.join(work, 'cache'),
      device: 'cpu',
      threads,
      batchSize: 16,
    });
    const extractImagesPerSecond = ex.extracted / (ex.timings.wallS - ex.timings.setupS);

    // Baseline 2: one forward pass of the fused model at batch 1.
    const head = await randomHead(path.join(work, 'head'), resnet, '/avgpool/GlobalAveragePool_output_0', 2048);
    const bundled = path.join(work, 'resnet.onnx');
    await bundle({ head, out: bundled });
    const forwardMs = await singleForwardMs(bundled, sample[0]!, quick ? 3 : 7);

    log('bench-serve: serving at concurrency 1, 8, 32');
    const server = await startServer([
      '--bundle',
      bundled,
      '--max-batch',
      '16',
      '--max-wait-ms',
      '5',
      '--max-queue',
      '256',
    ]);
    const levels: Record<string, unknown> = {};
    try {
      const requests = bodies.map((body) => ({
        method: 'POST',
        path: '/predict',
        headers: { 'content-type': 'application/octet-stream' },
        body,
      }));
      for (const [connections, amount] of quick
        ? [
            [1, 8],
            [8, 32],
            [32, 64],
          ]
        : [
            [1, 16],
            [8, 64],
            [32, 128],
          ]) {
        const r = await autocannon({ url: server.url.replace(/\/$/, ''), connections, amount, requests, timeout: 120 });
        const ok = r['2xx'];
        const imagesPerSecond = ok / r.duration;
        levels[`c${connections}`] = {
          requests: amount,
          ok,
          non2xx: r.non2xx,
          errors: r.errors,
          seconds: r.duration,
          imagesPerSecond,
          p50Ms: r.latency.p50,
          p99Ms: r.latency.p99,
          vsExtract: imagesPerSecond / extractImagesPerSecond,
          p50VsForward: r.latency.p50 / forwardMs,
        };
        log(
          `bench-serve: c=${connections}: ${imagesPerSecond.toFixed(2)} img/s (extract ${extractImagesPerSecond.toFixed(2)}), p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms`,
        );
      }
    } finally {
      await server.stop();
    }

    // Soak on MobileNetV2-int8 (fast, so thousands of requests stay within a minute or two on a shared CPU).
    let soakResult: Record<string, unknown> = { skipped: `needs ${mobilenet}` };
    if (await fs.stat(mobilenet).catch(() => null)) {
      const mHead = await randomHead(path.join(work, 'mhead'), mobilenet, '464_quantized', 1280);
      const mFile = path.join(work, 'mobilenet.onnx');
      await bundle({ head: mHead, out: mFile });
      const reference = await openBundle(mFile, { device: { kind: 'cpu' }, threads });
      const expected: string[] = [];
      for (const body of bodies) {
        const pixels = new Float32Array(3 * 224 * 224);
        writeNormalised(
          await decodeToRgb(body, reference.preprocessing.preset, reference.preprocessing.policy),
          reference.preprocessing.preset,
          'NCHW',
          pixels,
          0,
        );
        const p = await reference.predict(pixels, 1);
        const order = Array.from(p.keys()).sort((a, b) => p[b]! - p[a]! || a - b);
        expected.push(order.map((c) => `${reference.classes[c]}:${p[c]!.toFixed(5)}`).join(','));
      }
      await reference.close();
      log('bench-serve: soak');
      const s = await startServer(['--bundle', mFile, '--max-batch', '16', '--max-wait-ms', '5']);
      try {
        soakResult = {
          model: 'mobilenetv2-12-int8',
          ...(await soak(s.url, s.pid, bodies, expected, quick ? 400 : 2000, 16)),
        };
      } finally {
        soakResult.exitCodeAfterSigterm = await s.stop();
      }
    }
    return {
      model: 'resnet50 (shared fixture) + random 2-class head, fused bundle',
      machine: `${os.availableParallelism()} cores, shared with other jobs`,
      threads,
      extract: { images: ex.extracted, imagesPerSecond: extractImagesPerSecond },
      singleForwardMs: forwardMs,
      serve: levels,
      soak: soakResult,
      goals: {
        servedVsExtractAtC8: (levels.c8 as { vsExtract: number }).vsExtract,
        servedVsExtractAtC32: (levels.c32 as { vsExtract: number }).vsExtract,
        p50VsForwardAtC1: (levels.c1 as { p50VsForward: number }).p50VsForward,
      },
    };
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === self) {
  const result = await benchServe({
    quick: process.env.BENCH_QUICK === '1',
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}
