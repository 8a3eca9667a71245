/**
 * Every job's defaults, declared once, in a module that loads nothing heavy: the command line's --help and the
 * library entry read them without paying for onnxruntime, Arrow, sharp or fastify. Each job re-exports its own.
 */
import { DEFAULT_INT8_OPTIONS } from '../backbone/int8-defaults.js';
import { DEFAULT_DOWNLOAD_TIMEOUTS } from '../fetch/timeouts.js';
import { MIN_SWEEP_STEPS } from '../head/minibatch/engine.js';
import { DEFAULT_HEAD_OPTIONS } from '../head/model.js';
import { DEFAULT_SWEEP_GRID } from '../head/plan.js';
import { DEFAULT_HEAD_DIR } from '../head/saved.js';
import { DEFAULT_CACHE_DIR } from '../store/manifest.js';
import { DEFAULT_IMAGE_POLICY } from '../image/presets.js';
import type { BundleOptions } from './bundle.js';
import type { CompactOptions } from './compact.js';
import type { DemoOptions } from './demo.js';
import type { ExportOptions } from './export.js';
import type { ExtractOptions } from './extract.js';
import type { FetchModelOptions } from './fetch-model.js';
import type { InfoOptions } from './info.js';
import type { InspectOptions } from './inspect.js';
import type { InstallCudaOptions } from './install-cuda.js';
import type { PredictOptions } from './predict.js';
import type { ServeOptions } from './serve.js';
import type { TrainHeadOptions } from './train-head.js';
import type { AuditOptions } from './audit.js';
import { IQR_FENCE } from '../audit/outliers.js';
import { ANN_THRESHOLD } from '../neighbors/threshold.js';
import type { SimilarOptions } from './similar.js';
import type { DuplicatesOptions } from './duplicates.js';
import type { MapOptions } from './map.js';

export const DEFAULT_BUNDLE_OPTIONS: Readonly<BundleOptions> = Object.freeze({
  head: DEFAULT_HEAD_DIR,
  out: 'classifier.onnx',
  model: undefined,
  log: () => {},
});

export const DEFAULT_COMPACT_OPTIONS: Readonly<CompactOptions> = Object.freeze({
  cache: DEFAULT_CACHE_DIR,
  split: 'train',
  partRows: 4096,
  log: () => {},
});

export const DEFAULT_DEMO_OPTIONS: Readonly<DemoOptions> = Object.freeze({
  head: 'models/demo-head',
  report: 'demo-predictions.html',
  device: 'auto',
  progress: false,
});

export const DEFAULT_EXPORT_OPTIONS: Readonly<ExportOptions> = Object.freeze({
  // Same default as the CLI's --cache (DEFAULT_CACHE): the library may not import the CLI's flag module.
  cache: DEFAULT_CACHE_DIR,
  split: 'train',
  format: 'libsvm',
  out: '',
  normalize: 'none',
  stats: null,
  fitSplit: 'train',
  log: () => {},
});

/** Every default of `extract`, declared once: the CLI's --help reads them from here. */
export const DEFAULT_EXTRACT_OPTIONS: Readonly<Omit<ExtractOptions, 'data'>> = Object.freeze({
  split: 'train',
  seed: 0,
  followSymlinks: false,
  model: 'models/resnet50.onnx',
  tap: 'avgpool',
  preset: 'torchvision',
  exif: DEFAULT_IMAGE_POLICY.exif,
  icc: DEFAULT_IMAGE_POLICY.icc,
  maxPixels: DEFAULT_IMAGE_POLICY.maxPixels,
  cache: DEFAULT_CACHE_DIR,
  device: 'auto',
  threads: 0,
  fp16: false,
  int8: false,
  calibrate: DEFAULT_INT8_OPTIONS.calibrate,
  calibrationRanges: DEFAULT_INT8_OPTIONS.calibrationRanges,
  calibrationPercentile: DEFAULT_INT8_OPTIONS.calibrationPercentile,
  batchSize: 16,
  partRows: 512,
  strict: false,
  retryFailed: false,
  progress: false,
});

export const DEFAULT_FETCH_MODEL_OPTIONS: Readonly<FetchModelOptions> = Object.freeze({
  name: 'resnet50',
  dir: 'models',
  urls: undefined,
  sha256: undefined,
  retries: 2,
  retryDelayMs: 200,
  connectTimeoutMs: DEFAULT_DOWNLOAD_TIMEOUTS.connectTimeoutMs,
  stallTimeoutMs: DEFAULT_DOWNLOAD_TIMEOUTS.stallTimeoutMs,
  proxy: undefined,
  onProgress: undefined,
  log: undefined,
});

export const DEFAULT_INFO_OPTIONS: Readonly<InfoOptions> = Object.freeze({ cache: DEFAULT_CACHE_DIR, check: false });

export const DEFAULT_INSPECT_OPTIONS: Readonly<InspectOptions> = Object.freeze({ device: 'cpu' });

export const DEFAULT_INSTALL_CUDA_OPTIONS: Readonly<InstallCudaOptions> = Object.freeze({
  force: false,
  dryRun: false,
  timeoutMs: 600_000,
});

export const DEFAULT_PREDICT_OPTIONS: Readonly<Omit<PredictOptions, 'inputs'>> = Object.freeze({
  head: DEFAULT_HEAD_DIR,
  top: 3,
  batchSize: 16,
  device: 'auto',
  threads: 0,
  backend: 'auto',
  reportLimit: 1000,
});

export const DEFAULT_SERVE_OPTIONS: Readonly<ServeOptions> = Object.freeze({
  head: DEFAULT_HEAD_DIR,
  bundle: undefined,
  model: undefined,
  host: '127.0.0.1',
  port: 8080,
  maxBatch: 16,
  maxWaitMs: 5,
  maxQueue: 256,
  maxBodyMb: 20,
  // A server decodes several uploads at once; 50 Mpx (≈150 MB decoded) each is already generous.
  maxPixels: 50_000_000,
  timeoutMs: 30_000,
  // Under Kubernetes' default 30 s grace between SIGTERM and SIGKILL, so the 503s of a cut drain still go out.
  drainMs: 20_000,
  top: 5,
  cache: DEFAULT_CACHE_DIR,
  similarSplit: undefined,
  similarK: 10,
  similarMaxK: 100,
  device: 'auto',
  threads: 0,
  log: () => {},
});

/** Every default of the job, declared once: the CLI shows these in --help. */
export const DEFAULT_TRAIN_HEAD_OPTIONS: Readonly<Omit<TrainHeadOptions, 'log' | 'progress' | 'signal'>> =
  Object.freeze({
    ...DEFAULT_HEAD_OPTIONS,
    cache: DEFAULT_CACHE_DIR,
    head: DEFAULT_HEAD_DIR,
    trainSplit: 'train',
    valSplit: 'val',
    valFraction: null,
    normalize: 'none',
    backend: 'auto',
    solver: 'auto',
    sweep: true,
    holdoutFraction: 0.2,
    sweepEpochs: 100,
    sweepPatience: 10,
    sweepMinSteps: MIN_SWEEP_STEPS,
    grid: DEFAULT_SWEEP_GRID,
    sweepEngine: 'auto',
    memory: 2048,
  });

/**
 * How the head is fitted. `lbfgs`: a linear head as L2-regularised logistic regression solved to convergence (the
 * standard linear probe, scikit-learn's `LogisticRegression`); the sweep chooses C. `minibatch`: epochs of Adam
 * or SGD (any head, hidden layer included); the sweep chooses learning rate, weight decay and epochs. `auto`:
 * lbfgs, unless there is a hidden layer, the sweep is off, or an option only mini-batch training uses is given; and
 * `stream` when the cache is too large for the in-memory probe. `stream`: C and normalisation swept on a subsample,
 * the final fit streamed from the cache within the `memory` budget (jobs/train-head-scale.ts).
 */
export const SOLVERS = ['auto', 'lbfgs', 'minibatch', 'stream'] as const;
export type Solver = (typeof SOLVERS)[number];

/** Options that only mean something to mini-batch training: giving one (solver auto) asks for it. */
export const MINIBATCH_OPTIONS = Object.freeze([
  'lr',
  'epochs',
  'optimizer',
  'momentum',
  'batchSize',
  'stepSize',
  'gamma',
  'patience',
] as const);

export const DEFAULT_DUPLICATES_OPTIONS: Readonly<DuplicatesOptions> = Object.freeze({
  cache: DEFAULT_CACHE_DIR,
  splits: [],
  threshold: 0.9,
  k: 10,
  annThreshold: ANN_THRESHOLD,
  reportLimit: 300,
});

export const DEFAULT_SIMILAR_OPTIONS: Readonly<Omit<SimilarOptions, 'queries'>> = Object.freeze({
  cache: DEFAULT_CACHE_DIR,
  split: 'train',
  k: 10,
  device: 'auto',
  threads: 0,
  batchSize: 16,
});

export const DEFAULT_AUDIT_OPTIONS: Readonly<Omit<AuditOptions, 'log'>> = Object.freeze({
  cache: DEFAULT_CACHE_DIR,
  split: 'train',
  k: 10,
  rank: 'self_confidence',
  filterBy: 'prune_by_noise_rate',
  knnThreshold: 0.5,
  entropyThreshold: 0.9,
  iqrFence: IQR_FENCE,
  seed: 0,
  holdoutFraction: 0.2,
  grid: Object.freeze({ c: DEFAULT_SWEEP_GRID.c, normalize: DEFAULT_SWEEP_GRID.normalize }),
  classWeight: 'none',
  out: 'audit',
  data: null,
  labelsOut: null,
  reportLimit: 200,
});

export const DEFAULT_MAP_OPTIONS: Readonly<Omit<MapOptions, 'log'>> = Object.freeze({
  cache: DEFAULT_CACHE_DIR,
  splits: Object.freeze(['train']) as string[],
  out: 'map.html',
  color: 'label',
  head: null,
  audit: null,
  k: 15,
  metric: 'cosine',
  seed: 0,
  epochs: 0,
  minDist: 0.1,
  thumbnails: true,
  thumbnailSize: 64,
});
