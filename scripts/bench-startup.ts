/**
 * Start-up, each figure beside its baseline measured in the same run (interleaved, median of rounds), so a loaded
 * machine hits both alike:
 * - `featcache --version`, `--help` and `predict --help` against `node -e 0`;
 * - one-image `featcache predict` (FP32 and int8, model cache warm, and FP32 cold) against a plain onnxruntime-node +
 *   sharp script that creates a session on the same model, decodes and preprocesses the image, runs once and takes
 *   the top class from the model's own classifier;
 * - the backbone's setup split into its parts (hash, tap, worker, session, probe), cold and warm, against a plain
 *   `InferenceSession.create` with the same options, and sha256 of the file;
 * - (full run only) extract of hymenoptera val, FP32 against int8, with the model cache warm.
 * Runnable alone: `node dist/scripts/bench-startup.js [--quick] [--cli]` prints JSON; `--cli` times only the
 * command-line rows (no model, no ../shared needed).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from '../src/onnx/ort.js';
import { openBackbone } from '../src/backbone/index.js';
import { sessionOptions } from '../src/backbone/session.js';
import { loadTf } from '../src/head/runtime.js';
import { type HeadInfo, saveHead } from '../src/head/saved.js';
import { PRESETS } from '../src/image/presets.js';
import { extract } from '../src/jobs/extract.js';
import { sha256File } from '../src/util/fsx.js';
import { seededRandom } from '../src/util/random.js';
import { toolVersions } from '../src/version.js';

const self = fileURLToPath(import.meta.url);
const repo = path.resolve(path.dirname(self), '../..');
const shared = path.resolve(repo, '../shared');
const resnet = path.join(shared, 'fixtures/resnet50-tv-seed0/model.onnx');
const hymenoptera = path.join(shared, 'data/hymenoptera_data');
const image = path.join(hymenoptera, 'val/ants/10308379_1b6c72e180.jpg');
const cli = path.join(repo, 'dist/src/cli.js');
const threads = Math.min(os.availableParallelism(), 2);
const round = (x: number, digits = 3) => Number(x.toFixed(digits));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** The plain script a user would write: session create, decode + preprocess with sharp, one run, top class. */
const PLAIN_SCRIPT = `
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
const [model, file, threads] = process.argv.slice(1);
const session = await ort.InferenceSession.create(model, { graphOptimizationLevel: 'all', intraOpNumThreads: Number(threads) });
const { data } = await sharp(file).resize(256, 256, { fit: 'outside' }).resize(224, 224, { fit: 'cover' })
  .removeAlpha().raw().toBuffer({ resolveWithObject: true });
const mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225];
const x = new Float32Array(3 * 224 * 224);
for (let i = 0; i < 224 * 224; i++) for (let c = 0; c < 3; c++) x[c * 224 * 224 + i] = (data[i * 3 + c] / 255 - mean[c]) / std[c];
const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [1, 3, 224, 224]) });
const logits = out[session.outputNames[0]].data;
let best = 0; for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
console.log(best);
`;

interface Timed {
  seconds: number;
  status: number | null;
  stderr: string;
}

function timeCommand(args: string[], env: NodeJS.ProcessEnv = {}): Timed {
  const started = performance.now();
  const r = spawnSync(process.execPath, args, { cwd: repo, encoding: 'utf8', env: { ...process.env, ...env } });
  return { seconds: (performance.now() - started) / 1000, status: r.status, stderr: r.stderr.slice(-400) };
}

/** Rounds of each command in turn; the median of each, and the ratio of each to the first (the baseline). */
function compare(commands: Record<string, () => Timed>, rounds: number): Record<string, unknown> {
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  for (let r = 0; r < rounds; r++)
    for (const [name, run] of Object.entries(commands)) {
      const t = run();
      if (t.status !== 0) throw new Error(`${name} exited ${t.status}: ${t.stderr}`);
      times[name]!.push(t.seconds);
    }
  const [baseline] = Object.keys(commands);
  const base = median(times[baseline!]!);
  const result: Record<string, unknown> = {};
  for (const [name, ts] of Object.entries(times)) {
    result[`${name}MedianS`] = round(median(ts));
    if (name !== baseline)
      result[`ratio${name[0]!.toUpperCase()}${name.slice(1)}OverBaseline`] = round(median(ts) / base, 2);
  }
  result.rounds = rounds;
  return result;
}

/** A head with seeded random weights on the tapped pool: start-up cost does not depend on what it learnt. */
async function randomHead(dir: string, provenance: Record<string, unknown>): Promise<string> {
  const random = seededRandom(1);
  const dim = 2048;
  const info = {
    format: 1,
    classes: ['ants', 'bees'],
    normalization: { kind: 'l2' },
    provenance: {
      modelSha256: await sha256File(resnet),
      modelFile: resnet,
      tappedTensor: '/avgpool/GlobalAveragePool_output_0',
      preset: { ...PRESETS.torchvision! },
      exif: 'ignore',
      icc: 'ignore',
      dim,
      cache: 'bench',
      trainedAt: new Date().toISOString(),
      backend: 'cpu',
      backendSkipped: [],
      versions: toolVersions(),
      ...provenance,
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

/** openBackbone's setup parts, cold (empty model cache) then warm, beside a plain session create in this process. */
async function setupParts(cacheDir: string, rounds: number): Promise<Record<string, unknown>> {
  const open = async () => {
    const started = performance.now();
    const b = await openBackbone(resnet, { device: { kind: 'cpu' }, threads, modelCache: cacheDir });
    const totalS = (performance.now() - started) / 1000;
    await b.close();
    const s = b.setup;
    return { totalS, ...s };
  };
  const plainCreate = async () => {
    const started = performance.now();
    const session = await ort.InferenceSession.create(resnet, sessionOptions('cpu', threads));
    const s = (performance.now() - started) / 1000;
    await session.release();
    return s;
  };
  const hashOnly = async () => {
    const started = performance.now();
    await sha256File(resnet);
    return (performance.now() - started) / 1000;
  };
  const cold = await open();
  const warm: Awaited<ReturnType<typeof open>>[] = [];
  const plain: number[] = [];
  const hash: number[] = [];
  for (let r = 0; r < rounds; r++) {
    plain.push(await plainCreate());
    hash.push(await hashOnly());
    warm.push(await open());
  }
  const med = (key: keyof Awaited<ReturnType<typeof open>>) => round(median(warm.map((w) => Number(w[key]))));
  const warmTotal = med('totalS');
  const roundAll = (o: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === 'number' ? round(v) : v]));
  return {
    ratioWarmSetupOverPlainSessionCreate: round(warmTotal / median(plain), 2),
    ratioColdSetupOverPlainSessionCreate: round(cold.totalS / median(plain), 2),
    plainSessionCreateMedianS: round(median(plain)),
    sha256OfModelMedianS: round(median(hash)),
    cold: roundAll(cold),
    warm: {
      totalS: warmTotal,
      hashS: med('hashS'),
      tapS: med('tapS'),
      workerS: med('workerS'),
      sessionS: med('sessionS'),
      probeS: med('probeS'),
      reused: { hash: warm.every((w) => w.hashReused), tapped: warm.every((w) => w.tappedReused) },
      optimised: warm.map((w) => w.optimised),
    },
    rounds,
  };
}

/** extract of hymenoptera val, FP32 then int8, into fresh feature caches with the model cache already warm. */
async function int8EndToEnd(work: string): Promise<Record<string, unknown>> {
  const run = async (name: string, int8: boolean) =>
    extract({
      data: hymenoptera,
      split: 'val',
      model: resnet,
      cache: path.join(work, name),
      device: 'cpu',
      threads,
      batchSize: 16,
      int8,
      calibrate: 8,
    });
  const runs: Record<string, { images: number; wallS: number; setupS: number; imagesPerSecond: number }[]> = {
    fp32: [],
    int8: [],
  };
  for (const pass of ['warm-up', 'measured']) {
    for (const precision of ['fp32', 'int8'] as const) {
      const r = await run(`${precision}-${pass}`, precision === 'int8');
      if (pass === 'measured')
        runs[precision]!.push({
          images: r.extracted,
          wallS: round(r.timings.wallS),
          setupS: round(r.timings.setupS),
          imagesPerSecond: round(r.extracted / r.timings.wallS, 2),
        });
    }
  }
  const [fp32, int8] = [runs.fp32![0]!, runs.int8![0]!];
  return {
    speedupInt8OverFp32EndToEnd: round(int8.imagesPerSecond / fp32.imagesPerSecond, 2),
    note: 'wall time including setup, model cache warm (the second run of each); images per wall second',
    fp32,
    int8,
  };
}

/** `--version`, `--help` and one command's `--help`, each interleaved with `node -e 0`. */
function cliRows(rounds: number): Record<string, unknown> {
  const nodeBaseline = () => timeCommand(['-e', '0']);
  return {
    version: compare({ node: nodeBaseline, version: () => timeCommand([cli, '--version']) }, rounds),
    help: compare({ node: nodeBaseline, help: () => timeCommand([cli, '--help']) }, rounds),
    commandHelp: compare({ node: nodeBaseline, predictHelp: () => timeCommand([cli, 'predict', '--help']) }, rounds),
  };
}

const loadNow = () => os.loadavg().map((l) => round(l, 1));

export async function benchStartup(opts: {
  quick: boolean;
  cliOnly?: boolean;
  log: (l: string) => void;
}): Promise<Record<string, unknown>> {
  const machine = `${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores, ${threads} onnxruntime threads`;
  if (opts.cliOnly) {
    const loadBefore = loadNow();
    const rows = cliRows(opts.quick ? 6 : 10);
    return { machine, loadAverage: { before: loadBefore, after: loadNow() }, ...rows };
  }
  if (
    !(await fs.access(resnet).then(
      () => true,
      () => false,
    ))
  )
    return { skipped: 'needs ../shared (ResNet50 fixture and hymenoptera)' };
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-startup-'));
  const cacheDir = path.join(work, 'model-cache');
  const env = { FEATCACHE_CACHE_DIR: cacheDir };
  const rounds = opts.quick ? 3 : 5;
  const loadBefore = os.loadavg();
  const userCacheDir = process.env.FEATCACHE_CACHE_DIR;
  // In-process jobs (the int8 calibration, extract) use the bench's own model cache, never the user's.
  process.env.FEATCACHE_CACHE_DIR = cacheDir;
  try {
    opts.log('startup: --version, --help, predict --help');
    const rows = cliRows(rounds * 2);

    opts.log('startup: one-image predict');
    const fp32Head = await randomHead(path.join(work, 'head-fp32'), {});
    const calibrated = await extract({
      data: hymenoptera,
      split: 'val',
      model: resnet,
      cache: path.join(work, 'int8-cache'),
      device: 'cpu',
      threads,
      int8: true,
      calibrate: 8,
      shard: '0/8',
    });
    const int8Head = calibrated.int8
      ? await randomHead(path.join(work, 'head-int8'), {
          precision: 'int8',
          calibrationHash: calibrated.int8.calibrationHash,
          int8Model: calibrated.int8.file,
        })
      : null;
    // featcache turns onnxruntime's telemetry off (src/onnx/ort.ts); the plain script runs with it off too.
    const plain = () =>
      timeCommand(['--input-type=module', '-e', PLAIN_SCRIPT, resnet, image, String(threads)], {
        ORT_DISABLE_TELEMETRY: '1',
      });
    const predictWith =
      (head: string, extraEnv: NodeJS.ProcessEnv = env) =>
      () =>
        timeCommand([cli, 'predict', image, '--head', head, '--device', 'cpu', '--threads', String(threads)], extraEnv);
    // Warm the model cache once (this is the first-run cost a user pays once per model).
    const first = predictWith(fp32Head, { FEATCACHE_CACHE_DIR: path.join(work, 'cold-cache') })();
    const predict = compare(
      {
        plain,
        fp32: predictWith(fp32Head),
        ...(int8Head ? { int8: predictWith(int8Head) } : {}),
        fp32ColdCache: () =>
          predictWith(fp32Head, {
            FEATCACHE_CACHE_DIR: path.join(work, `cold-${Math.random().toString(36).slice(2)}`),
          })(),
      },
      rounds,
    );

    opts.log('startup: setup parts');
    const setup = await setupParts(path.join(work, 'setup-cache'), rounds);
    const e2e = opts.quick ? { skipped: 'full run only' } : await int8EndToEnd(work);
    return {
      machine,
      loadAverage: { before: loadBefore.map((l) => round(l, 1)), after: loadNow() },
      onnxruntime: ort.env.versions.common,
      ...rows,
      predictOneImage: {
        ...predict,
        firstEverRunS: round(first.seconds),
        int8: int8Head ? 'int8 head on the int8 model calibrated above' : `skipped: ${calibrated.int8Fallback}`,
      },
      setup,
      int8EndToEnd: e2e,
    };
  } finally {
    if (userCacheDir === undefined) delete process.env.FEATCACHE_CACHE_DIR;
    else process.env.FEATCACHE_CACHE_DIR = userCacheDir;
    await fs.rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === self) {
  const quick = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';
  const cliOnly = process.argv.includes('--cli');
  benchStartup({ quick, cliOnly, log: (l) => process.stderr.write(`${l}\n`) }).then(
    (result) => process.stdout.write(`${JSON.stringify(result, null, 2)}\n`),
    (error) => {
      process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
