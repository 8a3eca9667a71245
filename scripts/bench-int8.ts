/**
 * `extract --int8` against FP32 on the ResNet50 fixture and hymenoptera, in one process so the ratios share the
 * machine's load: forward-only (the same batch through both backbones, alternating rounds) and end to end (extract
 * into two caches, alternating splits), with the decode/inference split, peak RSS, and fidelity — centred cosine of
 * the cached val features and how often heads trained on FP32 features decide the same on int8 ones.
 * Runnable alone: `node dist/scripts/bench-int8.js [--quick]` prints JSON.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Backbone, openBackbone } from '../src/backbone/index.js';
import { datasetCalibrationSource } from '../src/backbone/calibration-source.js';
import { featureFidelity, predictionAgreement } from '../src/backbone/fidelity.js';
import { openDataset } from '../src/dataset/index.js';
import { loadTf } from '../src/head/runtime.js';
import { DEFAULT_HEAD_OPTIONS } from '../src/head/model.js';
import { fitHead as trainHead, predictProbabilities } from '../src/head/minibatch/train.js';
import { decodeToRgb, writeNormalised } from '../src/image/preprocess.js';
import { DEFAULT_IMAGE_POLICY, getPreset } from '../src/image/presets.js';
import { type ExtractResult, extract } from '../src/jobs/extract.js';
import { NORMALIZATIONS, applyNormalization, fitNormalization } from '../src/head/normalize.js';
import { type FeatureSet, FeatureCache } from '../src/store/reader.js';
import { exists } from '../src/util/fsx.js';

const self = fileURLToPath(import.meta.url);
const shared = path.resolve(path.dirname(self), '../../../shared');
const resnet = path.join(shared, 'fixtures/resnet50-tv-seed0/model.onnx');
const hymenoptera = path.join(shared, 'data/hymenoptera_data');
const preset = getPreset('torchvision');
const threads = Math.min(os.availableParallelism(), 2);
const batchSize = 16;
const calibrate = 32;

const peakRssMb = () => Math.round(process.resourceUsage().maxRSS / 1024);
const round = (x: number, digits = 3) => Number(x.toFixed(digits));

async function valBatch(count: number): Promise<Float32Array> {
  const val = await openDataset({ data: hymenoptera, split: 'val', seed: 0 });
  const pixels = new Float32Array(count * 3 * 224 * 224);
  const items = val.items.slice(0, count);
  const decoded = await Promise.all(
    items.map(async (item) => decodeToRgb((await val.source.read(item)).bytes, preset, DEFAULT_IMAGE_POLICY)),
  );
  decoded.forEach((rgb, i) => writeNormalised(rgb, preset, 'NCHW', pixels, i));
  return pixels;
}

/** Both backbones on the same batch, alternating rounds so load changes hit both alike. */
async function forwardOnly(fp32: Backbone, int8: Backbone, rounds: number, perRound: number) {
  const pixels = await valBatch(batchSize);
  const seconds = { fp32: 0, int8: 0 };
  for (const b of [fp32, int8]) await b.extract(pixels.slice(), batchSize, 224);
  for (let r = 0; r < rounds; r++) {
    for (const [name, b] of [
      ['fp32', fp32],
      ['int8', int8],
    ] as const) {
      const started = performance.now();
      for (let k = 0; k < perRound; k++) await b.extract(pixels.slice(), batchSize, 224);
      seconds[name] += (performance.now() - started) / 1000;
    }
  }
  const images = rounds * perRound * batchSize;
  return {
    batchSize,
    images,
    fp32ImagesPerSecond: round(images / seconds.fp32, 1),
    int8ImagesPerSecond: round(images / seconds.int8, 1),
    speedup: round(seconds.fp32 / seconds.int8, 2),
  };
}

function timingSplit(results: ExtractResult[]) {
  const sum = (f: (r: ExtractResult) => number) => results.reduce((s, r) => s + f(r), 0);
  const images = sum((r) => r.extracted);
  const seconds = sum((r) => r.timings.wallS - r.timings.setupS);
  return {
    images,
    seconds: round(seconds, 2),
    imagesPerSecond: round(images / seconds, 1),
    inferS: round(
      sum((r) => r.timings.inferS),
      2,
    ),
    decodeBusyS: round(
      sum((r) => r.timings.decodeBusyS),
      2,
    ),
    decodeExposedS: round(
      sum((r) => r.timings.decodeWaitS),
      2,
    ),
    setupS: round(
      sum((r) => r.timings.setupS),
      2,
    ),
  };
}

/** Heads trained on FP32 features (each normalisation featcache offers) and shown FP32 and int8 features. */
async function headAgreement(train: FeatureSet, evalFp32: FeatureSet, evalInt8: FeatureSet) {
  const { tf } = await loadTf('auto');
  const out: Record<string, { agreement: number; fp32Accuracy: number }> = {};
  for (const kind of NORMALIZATIONS) {
    const x = train.features.slice();
    const a = evalFp32.features.slice();
    const b = evalInt8.features.slice();
    const n = fitNormalization(kind, x, train.count, train.dim);
    for (const [m, count] of [
      [x, train.count],
      [a, evalFp32.count],
      [b, evalInt8.count],
    ] as const)
      applyNormalization(n, m, count, train.dim);
    const head = trainHead(
      tf,
      { features: x, labels: train.labels, count: train.count },
      null,
      train.dim,
      train.classes.length,
      { ...DEFAULT_HEAD_OPTIONS, epochs: 30 },
    );
    const pa = predictProbabilities(tf, head.layers, a, evalFp32.count);
    const pb = predictProbabilities(tf, head.layers, b, evalInt8.count);
    const truth = new Float32Array(evalFp32.count * train.classes.length);
    evalFp32.labels.forEach((l, i) => (truth[i * train.classes.length + l] = 1));
    out[kind] = {
      agreement: round(predictionAgreement(pa, pb, evalFp32.count, train.classes.length)),
      fp32Accuracy: round(predictionAgreement(pa, truth, evalFp32.count, train.classes.length)),
    };
  }
  return out;
}

const subset = (set: FeatureSet, keep: (i: number) => boolean): FeatureSet => {
  const rows = [...Array(set.count).keys()].filter(keep);
  const features = new Float32Array(rows.length * set.dim);
  rows.forEach((r, k) => features.set(set.features.subarray(r * set.dim, (r + 1) * set.dim), k * set.dim));
  return {
    ...set,
    count: rows.length,
    features,
    labels: Int32Array.from(rows, (r) => set.labels[r]!),
    paths: rows.map((r) => set.paths[r]!),
  };
};

export async function benchInt8(opts: { quick: boolean; log: (l: string) => void }): Promise<Record<string, unknown>> {
  if (!(await Promise.all([resnet, hymenoptera].map(exists))).every(Boolean))
    return { skipped: `needs ${resnet} and ${hymenoptera} (../shared)` };
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-int8-'));
  try {
    const int8Dir = path.join(dir, 'models');
    // 1. Calibrate and quantise once (what the first `extract --int8` does), then check fusion.
    const train = await openDataset({ data: hymenoptera, split: 'train', seed: 0 });
    const started = performance.now();
    const int8 = await openBackbone(resnet, {
      device: { kind: 'cpu' },
      threads,
      log: opts.log,
      int8: {
        calibration: () =>
          datasetCalibrationSource(train, { count: calibrate, seed: 0, preset, policy: DEFAULT_IMAGE_POLICY }),
        options: { int8Dir },
      },
    });
    const quantiseS = (performance.now() - started) / 1000;
    const rssAfterCalibrationMb = peakRssMb();
    if (!int8.int8) {
      await int8.close();
      return { skipped: `int8 fell back to FP32: ${int8.int8Fallback}` };
    }
    const { fusion, provenance } = int8.int8;
    const fp32 = await openBackbone(resnet, { device: { kind: 'cpu' }, threads });
    let forward;
    try {
      opts.log('bench-int8: forward-only');
      forward = await forwardOnly(fp32, int8, opts.quick ? 2 : 4, opts.quick ? 2 : 3);
    } finally {
      await fp32.close();
      await int8.close();
    }
    const rssAfterForwardMb = peakRssMb();
    // 2. End to end: the extract job into an FP32 and an int8 cache, alternating.
    const caches = { fp32: path.join(dir, 'fp32'), int8: path.join(dir, 'int8') };
    // Quick: half of val (shard 0/2); the int8 model is calibrated on the whole train split either way.
    const splits = opts.quick ? ['val'] : ['train', 'val'];
    const runs: Record<'fp32' | 'int8', ExtractResult[]> = { fp32: [], int8: [] };
    for (const split of splits) {
      for (const precision of ['fp32', 'int8'] as const) {
        opts.log(`bench-int8: extract ${split} ${precision}`);
        runs[precision].push(
          await extract({
            data: hymenoptera,
            split,
            model: resnet,
            cache: caches[precision],
            device: 'cpu',
            threads,
            batchSize,
            int8: precision === 'int8',
            calibrate,
            int8Dir,
            shard: opts.quick ? '0/2' : undefined,
          }),
        );
      }
    }
    const reused = runs.int8.every((r) => r.int8?.reused === true);
    const e2e = { fp32: timingSplit(runs.fp32), int8: timingSplit(runs.int8) };
    // 3. Fidelity on the cached val features; heads trained on FP32 train features (quick: even val rows → odd).
    const [fp32Cache, int8Cache] = await Promise.all([FeatureCache.open(caches.fp32), FeatureCache.open(caches.int8)]);
    const valFp32 = await fp32Cache.read('val');
    const valInt8 = await int8Cache.read('val');
    const fidelity = featureFidelity(valFp32.features, valInt8.features, valFp32.count, valFp32.dim);
    const heads = opts.quick
      ? await headAgreement(
          subset(valFp32, (i) => i % 2 === 0),
          subset(valFp32, (i) => i % 2 === 1),
          subset(valInt8, (i) => i % 2 === 1),
        )
      : await headAgreement(await fp32Cache.read('train'), valFp32, valInt8);
    return {
      machine: `${os.cpus()[0]?.model ?? 'cpu'}, ${threads} threads, load average ${os
        .loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')}`,
      calibration: {
        images: provenance.calibration.count,
        ranges: provenance.calibration.method,
        quantiseS: round(quantiseS, 2),
        reusedByExtract: reused,
      },
      fusion,
      forwardOnly: forward,
      endToEnd: { ...e2e, speedup: round(e2e.int8.imagesPerSecond / e2e.fp32.imagesPerSecond, 2) },
      fidelity: {
        images: fidelity.count,
        cosine: { min: round(fidelity.cosine.min, 4), median: round(fidelity.cosine.median, 4) },
        centredCosine: { min: round(fidelity.centredCosine.min, 4), median: round(fidelity.centredCosine.median, 4) },
      },
      headAgreement: heads,
      // Peak RSS is process-wide and only grows: after calibration (FP32 activations read back), after both backbones
      // ran side by side, and at the end (extract runs, heads).
      peakRssMb: { afterCalibration: rssAfterCalibrationMb, afterForwardOnly: rssAfterForwardMb, end: peakRssMb() },
    };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === self) {
  const quick = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';
  benchInt8({ quick, log: (l) => process.stderr.write(`${l}\n`) }).then(
    (result) => process.stdout.write(`${JSON.stringify(result, null, 2)}\n`),
    (error) => {
      process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
