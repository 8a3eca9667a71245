/**
 * `npm run bench`: one JSON object on stdout, leading with `ratios` (each speed against a baseline measured in the
 * same run) and `machine` (CPU model, cores, onnxruntime and node versions): absolute figures are only meaningful
 * beside the machine they were taken on. Each built-in scenario runs in its own process so its peak RSS is its own;
 * per-feature modules (scripts/bench-<name>.ts exporting bench<Name>({ quick, log })) run when present.
 *   BENCH_QUICK=1 scales the synthetic sizes down for a smoke run; BENCH_ONLY=extract,int8 runs only those sections.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as ort from '../src/onnx/ort.js';
import sharp from 'sharp';
import { openBackbone } from '../src/backbone/index.js';
import { errorMessage } from '../src/errors.js';
import { toolVersions } from '../src/version.js';
import { extract } from '../src/jobs/extract.js';
import { exportSplit } from '../src/jobs/export.js';
import { loadTf } from '../src/head/runtime.js';
import { DEFAULT_HEAD_OPTIONS } from '../src/head/model.js';
import { fitHead as trainHead } from '../src/head/minibatch/train.js';
import { fitHeadOrt } from '../src/head/minibatch/fit-ort.js';
import { engineSessionOptions } from '../src/head/minibatch/ort-engine.js';
import { encodeModel, onnx } from '../src/backbone/graph.js';
import { ensureManifest } from '../src/store/manifest.js';
import { writePart } from '../src/store/part.js';
import { seededRandom } from '../src/util/random.js';
import { cropGeometry } from '../src/image/preprocess.js';
import { getPreset } from '../src/image/presets.js';
import { resizeBilinearWindow, resizeBilinearWindowJs } from '../src/image/resample.js';
import { resampleEngine } from '../src/image/resample-simd.js';

const self = fileURLToPath(import.meta.url);
const repo = path.resolve(path.dirname(self), '../..');
const shared = path.resolve(repo, '../shared');
const resnet = path.join(shared, 'fixtures/resnet50-tv-seed0/model.onnx');
const hymenoptera = path.join(shared, 'data/hymenoptera_data');
const quick = process.env.BENCH_QUICK === '1';
const batchSize = 16;
// BENCH_THREADS=1 leaves a core to decoding on a 2-core machine (how extract does with a core to spare).
const threads = Number(process.env.BENCH_THREADS ?? Math.min(os.availableParallelism(), 2));
const torchvision = getPreset('torchvision');

const peakRssMb = () => Math.round(process.resourceUsage().maxRSS / 1024);
/** User + system CPU of this process (all its threads), in ms. */
const cpuMs = (usage: NodeJS.CpuUsage) => (usage.user + usage.system) / 1000;

async function tmp(name: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `featcache-bench-${name}-`));
}

const extractOptions = (data: string, cache: string, split = 'train') => ({
  data,
  split,
  model: resnet,
  cache,
  device: 'cpu',
  threads,
  batchSize,
});

const scenarios: Record<string, (arg?: string) => Promise<Record<string, unknown>>> = {
  /** End-to-end extract on hymenoptera train+val: decode, preprocess, infer, write. */
  async 'extract-hymenoptera'() {
    const cache = await tmp('cache');
    let images = 0;
    let seconds = 0;
    const steady = { images: 0, seconds: 0 };
    const breakdown = { decodeWaitS: 0, decodeBusyS: 0, inferS: 0, writeS: 0 };
    // CPU time per image holds up on a shared machine where img/s does not (it includes the warm setup, ~2%).
    const cpuBefore = process.cpuUsage();
    for (const split of ['train', 'val']) {
      const r = await extract(extractOptions(hymenoptera, cache, split));
      images += r.extracted;
      seconds += r.timings.wallS - r.timings.setupS;
      steady.images += r.timings.steady?.images ?? 0;
      steady.seconds += r.timings.steady?.seconds ?? 0;
      for (const k of Object.keys(breakdown) as (keyof typeof breakdown)[]) breakdown[k] += r.timings[k];
    }
    const cpuMsPerImage = cpuMs(process.cpuUsage(cpuBefore)) / images;
    return {
      images,
      seconds,
      imagesPerSecond: images / seconds,
      // From each split's first batch's end to its last's: no setup, first decode, cold first run or final commit.
      steadyImagesPerSecond: steady.images > 0 ? steady.images / steady.seconds : null,
      cpuMsPerImage,
      ...breakdown,
      peakRssMb: peakRssMb(),
    };
  },
  /** onnxruntime alone on the same tapped model and batch size: the ceiling for extract. */
  async 'forward-only'() {
    const backbone = await openBackbone(resnet, { device: { kind: 'cpu' }, threads });
    const random = seededRandom(1);
    const pixels = Float32Array.from({ length: batchSize * 3 * 224 * 224 }, () => random() * 2 - 1);
    // extract() transfers its buffer to the inference thread, so each call gets a copy (≈2 ms, <1% of a batch).
    await backbone.extract(pixels.slice(), batchSize, 224);
    const batches = quick ? 6 : 25;
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    for (let b = 0; b < batches; b++) await backbone.extract(pixels.slice(), batchSize, 224);
    const seconds = (performance.now() - started) / 1000;
    const cpuMsPerImage = cpuMs(process.cpuUsage(cpuBefore)) / (batches * batchSize);
    await backbone.close();
    return {
      images: batches * batchSize,
      seconds,
      imagesPerSecond: (batches * batchSize) / seconds,
      cpuMsPerImage,
      peakRssMb: peakRssMb(),
      onnxruntime: ort.env.versions.common,
    };
  },
  /**
   * Pillow's resize of every hymenoptera image to its 224 crop, the WebAssembly SIMD passes against the JavaScript
   * ones (the same bytes), alternating, after one warm-up pass of each.
   */
  async resize() {
    const files = (await fs.readdir(path.join(hymenoptera, 'val', 'ants'))).map((f) =>
      path.join(hymenoptera, 'val', 'ants', f),
    );
    const images = await Promise.all(
      files.map(async (file) => {
        const { data, info } = await sharp(file, { ignoreIcc: true })
          .removeAlpha()
          .toColourspace('srgb')
          .raw()
          .toBuffer({ resolveWithObject: true });
        return { data, width: info.width, height: info.height, ...cropGeometry(info.width, info.height, torchvision) };
      }),
    );
    const pass = (resize: typeof resizeBilinearWindow) => {
      const started = performance.now();
      for (const i of images) resize(i.data, i.width, i.height, 3, i.target, i.window);
      return (performance.now() - started) / images.length;
    };
    const ms = { wasm: [] as number[], js: [] as number[] };
    pass(resizeBilinearWindow);
    pass(resizeBilinearWindowJs);
    for (let round = 0; round < (quick ? 2 : 5); round++) {
      ms.wasm.push(pass(resizeBilinearWindow));
      ms.js.push(pass(resizeBilinearWindowJs));
    }
    const [wasm, js] = [Math.min(...ms.wasm), Math.min(...ms.js)];
    return {
      images: images.length,
      engine: resampleEngine().engine,
      wasmMsPerImage: wasm,
      jsMsPerImage: js,
      ratioWasmOverJs: wasm / js,
    };
  },
  /** Extract over N generated images: peak RSS must not grow with N. */
  async 'extract-synthetic'(arg) {
    const count = Number(arg);
    const data = await tmp('images');
    const random = seededRandom(count);
    for (let i = 0; i < count; i++) {
      const raw = Buffer.from(Array.from({ length: 96 * 72 * 3 }, () => Math.floor(random() * 256)));
      await sharp(raw, { raw: { width: 96, height: 72, channels: 3 } })
        .jpeg()
        .toFile(path.join(data, `${i}.jpg`));
    }
    const r = await extract(extractOptions(data, await tmp('cache')));
    await fs.rm(data, { recursive: true, force: true });
    return { images: r.extracted, imagesPerSecond: r.imagesPerSecond, peakRssMb: peakRssMb() };
  },
  /**
   * train-head: 10 epochs, 10,000 synthetic 2048-d rows, 120 classes, SGD momentum, batch 256 (and 32), on the tfjs
   * backend loadTf picks and on the onnxruntime engine (fitHeadOrt), with onnxruntime's sgemm peak measured before
   * and after in the same process and session options.
   */
  async 'train-head'() {
    const rows = quick ? 2000 : 10_000;
    const [dim, classes] = [2048, 120];
    const random = seededRandom(1);
    const centres = Float32Array.from({ length: classes * dim }, () => random() * 2 - 1);
    const labels = Int32Array.from({ length: rows }, () => Math.floor(random() * classes));
    const features = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++)
      for (let d = 0; d < dim; d++) features[r * dim + d] = centres[labels[r]! * dim + d]! + (random() * 2 - 1) * 3;
    const runtime = await loadTf('auto');
    const result: Record<string, unknown> = {
      rows,
      dim,
      classes,
      epochs: 10,
      backend: runtime.backend,
      backendSkipped: runtime.skipped,
    };
    const split = { features, labels, count: rows };
    const flopsPerEpoch = 4 * rows * dim * classes;
    const optionsFor = (batch: number) => ({
      ...DEFAULT_HEAD_OPTIONS,
      optimizer: 'sgd' as const,
      lr: 0.01,
      momentum: 0.9,
      batchSize: batch,
      epochs: 10,
    });
    const tfjsSeconds: Record<number, number> = {};
    for (const batch of [256, 32]) {
      const r = trainHead(runtime.tf, split, null, dim, classes, optionsFor(batch));
      tfjsSeconds[batch] = r.secondsPerEpoch;
      result[`secondsPerEpochBatch${batch}`] = r.secondsPerEpoch;
      result[`finalTrainAccBatch${batch}`] = r.history.at(-1)!.trainAcc;
    }
    // The peak is measured between the engine's runs, and the highest kept: load from other processes only ever
    // lowers a measurement, and on a shared machine it comes and goes within seconds. Batch 256 runs twice.
    const peaks = [await peakSgemm()];
    const ort: Record<string, Record<string, unknown>> = {};
    for (const batch of [256, 256, 32]) {
      const o = await fitHeadOrt(split, null, dim, classes, optionsFor(batch));
      peaks.push(await peakSgemm());
      const runs = [...((ort[`batch${batch}`]?.runsSecondsPerEpoch as number[]) ?? []), o.secondsPerEpoch];
      const fastestEpoch = Math.min(
        ...o.history.map((h) => h.seconds),
        (ort[`batch${batch}`]?.fastestEpochSeconds as number) ?? Infinity,
      );
      ort[`batch${batch}`] = {
        secondsPerEpoch: Math.min(...runs),
        runsSecondsPerEpoch: runs,
        fastestEpochSeconds: fastestEpoch,
        finalTrainAcc: o.history.at(-1)!.trainAcc,
      };
    }
    const peak = Math.max(...peaks.map((p) => p.gflops));
    for (const batch of [256, 32]) {
      const b = ort[`batch${batch}`]!;
      const seconds = b.secondsPerEpoch as number;
      b.trainStepGflops = flopsPerEpoch / seconds / 1e9;
      b.fractionOfPeak = (b.trainStepGflops as number) / peak;
      b.fractionOfPeakFastestEpoch = flopsPerEpoch / (b.fastestEpochSeconds as number) / 1e9 / peak;
      result[`ratioOrtOverTfjsSecondsBatch${batch}`] = seconds / tfjsSeconds[batch]!;
      result[`ortStepOverPeakSgemmBatch${batch}`] = b.fractionOfPeak;
    }
    result.onnxruntime = {
      engine: 'fitHeadOrt (src/head/fit-ort.ts): one onnxruntime session.run per mini-batch',
      flops:
        '4·rows·dim·classes per epoch: the forward x·W and the weight gradient xᵀ·g, 2·rows·dim·classes each; softmax, loss, optimiser update and the batch gather are not counted, their time is',
      peakSgemmGflops: peak,
      // On a shared machine a busy neighbour halves the measured peak (one core left) and flatters the fraction.
      loadAverageAtEnd: os.loadavg().map((l) => Math.round(l * 100) / 100),
      peakSgemm: {
        shape: peaks[0]!.shape,
        repsEach: peaks[0]!.reps,
        bestOfEachMeasurement: peaks.map((p) => p.gflops),
      },
      ...ort,
    };
    return { ...result, peakRssMb: peakRssMb() };
  },
  /** Export of 100,000 synthetic rows (512-d) to libsvm and npy: peak RSS and MB/s. */
  async export() {
    const rows = quick ? 20_000 : 100_000;
    const dim = 512;
    const cache = await tmp('export');
    await ensureManifest(cache, {
      format: 1,
      modelFile: 'synthetic',
      modelSha256: '0'.repeat(64),
      tappedTensor: 'synthetic',
      tap: {},
      preset: {},
      exif: 'ignore',
      icc: 'ignore',
      dim,
      classes: ['a', 'b'],
      createdAt: '',
      versions: {},
    });
    await fs.mkdir(path.join(cache, 'train'));
    const random = seededRandom(2);
    const perPart = 2000;
    for (let p = 0; p < rows / perPart; p++) {
      const features = Float32Array.from({ length: perPart * dim }, () => (random() < 0.4 ? 0 : random() * 4));
      const partRows = Array.from({ length: perPart }, (_, i) => ({
        path: `img/${p * perPart + i}.jpg`,
        label: i % 2,
        labelName: i % 2 ? 'b' : 'a',
        size: 1,
        mtimeMs: 1,
      }));
      await writePart(path.join(cache, 'train', `part-${String(p).padStart(6, '0')}.arrow`), {
        meta: { split: 'train', shard: '0of1', runId: 'bench', dim, failures: [], removed: [], provenance: {} },
        rows: partRows,
        features,
      });
    }
    const result: Record<string, unknown> = { rows, dim };
    for (const format of ['libsvm', 'npy'] as const) {
      const out = path.join(cache, `out-${format}`);
      const r = await exportSplit({ cache, split: 'train', format, out, normalize: 'l2', fitSplit: 'train' });
      result[format] = { megabytes: (r.bytes ?? 0) / 1e6, seconds: r.seconds, mbPerSecond: r.mbPerSecond };
    }
    await fs.rm(cache, { recursive: true, force: true });
    return { ...result, peakRssMb: peakRssMb() };
  },
};

/** onnxruntime's float32 MatMul of [m, k]·[k, n] with the head engine's session options: best of `reps` after warm-up. */
async function peakSgemm(
  m = 2048,
  k = 2048,
  n = 2048,
  reps = 5,
): Promise<{ shape: number[]; reps: number; gflops: number; runsGflops: number[] }> {
  const info = (name: string, dims: number[]) =>
    onnx.ValueInfoProto.create({
      name,
      type: {
        tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } },
      },
    });
  const graph = encodeModel(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 13 }],
      graph: {
        name: 'peak-sgemm',
        node: [onnx.NodeProto.create({ name: 'mm', opType: 'MatMul', input: ['a', 'b'], output: ['c'] })],
        input: [info('a', [m, k]), info('b', [k, n])],
        output: [info('c', [m, n])],
      },
    }),
  );
  const session = await ort.InferenceSession.create(graph, engineSessionOptions());
  const random = seededRandom(3);
  const feeds = {
    a: new ort.Tensor(
      'float32',
      Float32Array.from({ length: m * k }, () => random()),
      [m, k],
    ),
    b: new ort.Tensor(
      'float32',
      Float32Array.from({ length: k * n }, () => random()),
      [k, n],
    ),
  };
  const fetches = { c: new ort.Tensor('float32', new Float32Array(m * n), [m, n]) };
  for (let i = 0; i < 2; i++) await session.run(feeds, fetches);
  const runsGflops: number[] = [];
  for (let i = 0; i < reps; i++) {
    const started = performance.now();
    await session.run(feeds, fetches);
    runsGflops.push((2 * m * k * n) / ((performance.now() - started) / 1000) / 1e9);
  }
  await session.release();
  return { shape: [m, k, n], reps, gflops: Math.max(...runsGflops), runsGflops };
}

function runScenario(name: string, arg?: string): Record<string, unknown> {
  const child = spawnSync(process.execPath, [self, '--scenario', name, ...(arg ? [arg] : [])], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  if (child.status !== 0) return { error: (child.stderr || child.stdout).trim().split('\n').at(-1) };
  return JSON.parse(child.stdout.trim().split('\n').at(-1)!);
}

function torchBaseline(rows: number, batch: number): Record<string, unknown> | null {
  try {
    const out = execFileSync(
      '/usr/bin/python3',
      [
        path.join(repo, 'scripts/torch_head_baseline.py'),
        String(rows),
        '2048',
        '120',
        '3',
        String(batch),
        String(threads),
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    );
    return JSON.parse(out.trim());
  } catch {
    return null;
  }
}

/** Where the numbers were taken: absolute speeds mean little without it (ratios travel between machines, img/s do not). */
export function machineInfo(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    logicalCores: cpus.length,
    availableParallelism: os.availableParallelism(),
    threadsUsed: threads,
    memoryGb: Math.round(os.totalmem() / 2 ** 30),
    loadAverageAtStart: os.loadavg().map((l) => Math.round(l * 100) / 100),
    platform: `${process.platform}/${process.arch}`,
    node: process.versions.node,
    onnxruntime: toolVersions().onnxruntime,
  };
}

/** Per-feature benchmark modules (scripts/bench-<name>.ts, written by the feature's owner), run when present. */
export const FEATURE_BENCHES: readonly string[] = Object.freeze([
  'int8',
  'serve',
  'sources',
  'head',
  'export',
  'startup',
  'audit',
  'head-scale',
  'map',
  'map-page',
  'serve-similar',
  'spinning',
  'neighbors',
]);

type FeatureBench = (opts: { quick: boolean; log: (l: string) => void }) => Promise<Record<string, unknown>>;

export async function runFeatureBench(name: string, log: (l: string) => void): Promise<Record<string, unknown>> {
  // BENCH_MODULE_DIR lets a test point this at stand-in modules.
  const file = path.join(process.env.BENCH_MODULE_DIR ?? path.dirname(self), `bench-${name}.js`);
  if (
    !(await fs.access(file).then(
      () => true,
      () => false,
    ))
  )
    return { skipped: `scripts/bench-${name}.ts is not in this build` };
  // head-scale → benchHeadScale
  const exported = `bench${name.replace(/(^|-)(\w)/g, (_, __, c: string) => c.toUpperCase())}`;
  try {
    const module = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    const bench = module[exported] as FeatureBench | undefined;
    if (typeof bench !== 'function') return { error: `scripts/bench-${name}.ts does not export ${exported}()` };
    return await bench({ quick, log });
  } catch (error) {
    return { error: errorMessage(error) };
  }
}

/** Every number whose key says it is a ratio, one level deep: what the report leads with. */
export function collectRatios(section: unknown): Record<string, number> {
  const ratios: Record<string, number> = {};
  if (!section || typeof section !== 'object') return ratios;
  for (const [key, value] of Object.entries(section)) {
    if (typeof value === 'number' && /ratio|speedup|over|relative/i.test(key)) ratios[key] = value;
    else if (value && typeof value === 'object' && !Array.isArray(value)) {
      for (const [inner, v] of Object.entries(value))
        if (typeof v === 'number' && /ratio|speedup|over|relative/i.test(inner)) ratios[`${key}.${inner}`] = v;
    }
  }
  return ratios;
}

/** BENCH_ONLY=extract,int8 runs only those sections (built-in: extract, trainHead, export; features: FEATURE_BENCHES). */
const only = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',').map((s) => s.trim())) : null;
const wanted = (section: string) => only === null || only.has(section);

async function main(): Promise<void> {
  const scenarioIndex = process.argv.indexOf('--scenario');
  if (scenarioIndex >= 0) {
    const result = await scenarios[process.argv[scenarioIndex + 1]!]!(process.argv[scenarioIndex + 2]);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const log = (line: string) => process.stderr.write(`bench: ${line}\n`);
  const machine = machineInfo();
  const measured: Record<string, unknown> = {};
  const haveShared = await fs.access(resnet).then(
    () => true,
    () => false,
  );
  if (wanted('extract') && haveShared) {
    log('extract: end to end vs forward-only');
    // Alternate the two measurements and compare best with best: the same treatment for both, less noise.
    const rounds = quick ? 1 : 2;
    const e2eRuns: Record<string, unknown>[] = [];
    const forwardRuns: Record<string, unknown>[] = [];
    for (let i = 0; i < rounds; i++) {
      e2eRuns.push(runScenario('extract-hymenoptera'));
      forwardRuns.push(runScenario('forward-only'));
    }
    const best = (runs: Record<string, unknown>[]) =>
      runs.reduce((a, b) => (Number(b.imagesPerSecond) > Number(a.imagesPerSecond) ? b : a));
    const [e2e, forward] = [best(e2eRuns), best(forwardRuns)];
    const bestSteady = Math.max(...e2eRuns.map((r) => Number(r.steadyImagesPerSecond)));
    const cpuPerImage = (runs: Record<string, unknown>[]) => Math.min(...runs.map((r) => Number(r.cpuMsPerImage)));
    measured.extract = {
      ratioEndToEndOverForwardOnly: Number(e2e.imagesPerSecond) / Number(forward.imagesPerSecond),
      // Steady state, as forward-only is measured (it leaves out its first, cold batch).
      ratioSteadyOverForwardOnly: bestSteady / Number(forward.imagesPerSecond),
      // Forward-only's CPU per image over extract's: the throughput ratio a machine with no neighbours could reach
      // when CPU is the limit, measured even while neighbours make img/s swing.
      ratioCpuPerImageForwardOverEndToEnd: cpuPerImage(forwardRuns) / cpuPerImage(e2eRuns),
      model: 'resnet50 (shared fixture)',
      batchSize,
      rounds,
      endToEnd: e2e,
      forwardOnly: forward,
      allRuns: {
        endToEnd: e2eRuns.map((r) => r.imagesPerSecond),
        forwardOnly: forwardRuns.map((r) => r.imagesPerSecond),
      },
    };
    const sizes = quick ? [200, 1000] : [2000, 10_000];
    measured.resize = runScenario('resize');
    measured.extractMemory = Object.fromEntries(
      sizes.map((n) => [`images${n}`, runScenario('extract-synthetic', String(n))]),
    );
  } else if (wanted('extract')) {
    measured.extract = { skipped: 'needs ../shared (ResNet50 fixture and hymenoptera)' };
  }
  if (wanted('trainHead')) {
    log('train-head vs PyTorch');
    const head = runScenario('train-head');
    const rows = Number(head.rows);
    const torch256 = torchBaseline(rows, 256);
    const torch32 = torchBaseline(rows, 32);
    measured.trainHead = {
      ratioToPytorchBatch256: torch256 ? Number(head.secondsPerEpochBatch256) / Number(torch256.secondsPerEpoch) : null,
      ratioToPytorchBatch32: torch32 ? Number(head.secondsPerEpochBatch32) / Number(torch32.secondsPerEpoch) : null,
      ...head,
      pytorch: torch256
        ? { batch256: torch256, batch32: torch32 }
        : { skipped: 'needs /usr/bin/python3 with torch (apt-get install python3-torch)' },
    };
  }
  if (wanted('export')) {
    log('export');
    measured.export = runScenario('export');
  }
  const features: Record<string, unknown> = {};
  for (const name of FEATURE_BENCHES) {
    if (!wanted(name)) continue;
    log(`feature ${name}`);
    features[name] = await runFeatureBench(name, log);
  }
  // Ratios first: they reproduce across machines; absolute figures only with the machine they were taken on.
  const ratios: Record<string, unknown> = {};
  for (const [name, section] of Object.entries({
    ...measured,
    ...Object.fromEntries(Object.entries(features).map(([k, v]) => [`feature.${k}`, v])),
  })) {
    const found = collectRatios(section);
    if (Object.keys(found).length > 0) ratios[name] = found;
  }
  const report = { ratios, machine, quick, ...measured, features };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
}

await main();
