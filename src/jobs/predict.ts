/**
 * The predict job: image → backbone → head. It uses the backbone, tap and preprocessing recorded in the head, so a
 * prediction sees exactly the features the head was trained on; a mismatched backbone is refused. An input that
 * cannot be found or decoded is one failed prediction, never the end of the run.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { type Backbone, openBackbone } from '../backbone/index.js';
import { checkFeaturePrecision } from '../backbone/precision.js';
import { parseDevice, threadCount } from '../backbone/device.js';
import { listEntryPath, readListLines } from '../dataset/list.js';
import type { UrlSourceOptions } from '../dataset/url.js';
import { isUrl } from '../dataset/url-defaults.js';
import { isImageName, walkImages } from '../dataset/walk.js';
import { missingFile, parseChoice, positiveInteger } from '../errors.js';
import type { Prediction } from '../export/report.js';
import { topK } from '../head/metrics.js';
import { BACKENDS, type BackendChoice, loadTf } from '../head/runtime.js';
import { HEAD_FILE, type HeadInfo, type LoadedHead, loadHead } from '../head/saved.js';
import { applyNormalization } from '../head/normalize.js';
import { decodeBatch } from '../image/batch.js';
import { DEFAULT_IMAGE_POLICY, type ImagePolicy, type Preset } from '../image/presets.js';
import { exists } from '../util/fsx.js';
import { withDefaults } from '../util/options.js';
import { DEFAULT_PREDICT_OPTIONS } from './defaults.js';

export { DEFAULT_PREDICT_OPTIONS };

export type { Prediction } from '../export/report.js';

export interface PredictOptions {
  /** Image files, http(s) URLs, folders (walked recursively), glob patterns and .txt lists of paths or URLs. Required. */
  inputs: string[];
  /** How URLs are fetched (timeouts, retries, concurrency, size cap). */
  fetch?: Partial<UrlSourceOptions> | undefined;
  /** Head directory written by train-head. */
  head: string;
  /** Backbone file; default: the one recorded in the head (checked by sha256 either way). */
  model?: string | undefined;
  /** Classes to return per image. */
  top: number;
  /** Images per inference call. */
  batchSize: number;
  /** `auto`, `cpu`, `cuda` or `cuda:N`. */
  device: string;
  /** onnxruntime intra-op threads; 0 = one per core. */
  threads: number;
  /** TensorFlow.js backend for the head. */
  backend: BackendChoice;
  /** Write a self-contained HTML page of thumbnails titled with the prediction. */
  report?: string | undefined;
  /** Thumbnails in the report at most; the page says how many were left out. */
  reportLimit: number;
}

export interface PredictResult {
  predictions: Prediction[];
  provider: string;
  backend: string;
  /** Predictions with an error (unreadable, undecodable or missing input). */
  failed: number;
}

/** An input that names nothing: reported as a failed prediction, not thrown. */
interface Unresolved {
  input: string;
  error: string;
}

/** Files, URLs, directories (walked recursively), glob patterns and .txt lists, in the order given, without duplicates. */
export async function expandInputs(inputs: string[]): Promise<{ files: string[]; unresolved: Unresolved[] }> {
  const files: string[] = [];
  const unresolved: Unresolved[] = [];
  for (const input of inputs) {
    if (isUrl(input)) {
      files.push(input.trim());
      continue;
    }
    const stat = await fs.stat(input).catch(() => null);
    if (stat?.isFile() && /\.txt$/i.test(input)) files.push(...(await listEntries(input)));
    else if (stat?.isDirectory())
      files.push(...(await walkImages(input, { followOutside: true })).images.map((p) => path.join(input, p)));
    else if (stat) files.push(input);
    else {
      const { default: fg } = await import('fast-glob');
      const matches = (await fg(input, { onlyFiles: true, dot: false })).filter(isImageName).sort();
      if (matches.length === 0) unresolved.push({ input, error: 'no such file, and as a glob it matches no images' });
      files.push(...matches);
    }
  }
  return { files: [...new Set(files)], unresolved };
}

/** A .txt list, read as extract reads one: absolute paths as written, relative ones from the list's folder. */
async function listEntries(list: string): Promise<string[]> {
  return (await readListLines(list)).map((line) => (isUrl(line) ? line : listEntryPath(list, line)));
}

/**
 * The head's provenance, read without TensorFlow.js so the backbone's worker can start its session while tfjs loads
 * on this thread (on one image, each is about a third of the run). loadHead validates it; null when unreadable.
 */
async function peekHeadInfo(dir: string): Promise<HeadInfo | null> {
  try {
    const info = JSON.parse(await fs.readFile(path.join(dir, HEAD_FILE), 'utf8')) as HeadInfo;
    return typeof info.provenance?.modelSha256 === 'string' ? info : null;
  } catch {
    return null;
  }
}

const closeQuietly = (opening: Promise<Backbone> | null) =>
  opening?.then(
    (b) => b.close(),
    () => {},
  );

async function checkedBackbone(
  head: Pick<LoadedHead, 'info'>,
  o: PredictOptions,
  onWorkerStarted?: () => void,
): Promise<Backbone> {
  const p = head.info.provenance;
  const modelFile = o.model ?? p.modelFile;
  if (!(await exists(modelFile))) {
    throw missingFile(
      'model',
      modelFile,
      `the head ${o.head} was trained on features of that file (sha256 ${p.modelSha256.slice(0, 12)}…) — pass its current path`,
    );
  }
  // A head trained on int8 features needs the same int8 model: found by its calibration hash, and used even where it
  // does not fuse (slower), since FP32 features would not fit the head.
  const int8 =
    p.precision === 'int8'
      ? {
          calibrationHash: p.calibrationHash,
          requireFused: false,
          options: { int8Dir: p.int8Model ? path.dirname(p.int8Model) : undefined },
        }
      : undefined;
  const backbone = await openBackbone(modelFile, {
    tap: p.tappedTensor,
    device: parseDevice(o.device),
    threads: o.threads,
    fp16: p.precision === 'fp16',
    int8,
    expect: { sha256: p.modelSha256, what: `the backbone the head ${o.head} was trained on` },
    onWorkerStarted,
  });
  try {
    checkFeaturePrecision(`head ${o.head}`, p, {
      precision: backbone.precision,
      calibrationHash: backbone.int8?.calibrationHash,
    });
  } catch (error) {
    await backbone.close();
    throw error;
  }
  return backbone;
}

function resolveOptions(given: Partial<PredictOptions> & { inputs: string[] }): PredictOptions {
  const o: PredictOptions = withDefaults(DEFAULT_PREDICT_OPTIONS, given);
  positiveInteger('top', o.top);
  positiveInteger('batchSize', o.batchSize);
  positiveInteger('reportLimit', o.reportLimit);
  threadCount(o.threads);
  parseChoice('backend', o.backend, BACKENDS);
  parseDevice(o.device);
  return o;
}

/**
 * Classifies images with a trained head: top-k labels with probabilities, per image, in input order (inputs that
 * name nothing come last, each with its error).
 *
 * @example
 * const { predictions } = await predict({ inputs: ['photos/'], head: 'models/head', top: 2 });
 * for (const p of predictions) console.log(p.path, p.error ?? p.top[0]);
 */
export async function predict(options: Partial<PredictOptions> & { inputs: string[] }): Promise<PredictResult> {
  const o = resolveOptions(options);
  // One image is often all a run does: URL fetching, globbing, bundles and the report load only when used.
  if (o.report) await (await import('../export/report.js')).requireReportReplaceable(o.report);
  if (o.model && (await (await import('../export/bundle.js')).isBundleFile(o.model)))
    return predictWithBundle(o, o.model);
  // TensorFlow.js (for the head) loads once the backbone's worker has started, so that loading it on this thread
  // overlaps the session's creation in the worker rather than delaying the worker's start.
  let releaseTf = () => {};
  const runtimeLoading = new Promise<void>((resolve) => (releaseTf = resolve)).then(() => loadTf(o.backend));
  runtimeLoading.catch(() => {});
  const peeked = await peekHeadInfo(o.head);
  const backboneOpening = peeked ? checkedBackbone({ info: peeked }, o, releaseTf) : null;
  // Its errors are reported in the order of the sequential code: the head's, the inputs', then the backbone's.
  if (backboneOpening) void backboneOpening.then(releaseTf, releaseTf);
  else releaseTf();
  let runtime: Awaited<typeof runtimeLoading>;
  let head: LoadedHead;
  try {
    runtime = await runtimeLoading;
    head = await loadHead(runtime.tf, o.head);
  } catch (error) {
    await closeQuietly(backboneOpening);
    throw error;
  }
  try {
    const { files, unresolved } = await expandInputs(o.inputs).catch(async (error: unknown) => {
      await closeQuietly(backboneOpening);
      throw error;
    });
    const backbone = await (backboneOpening ?? checkedBackbone(head, o));
    let predictions: Prediction[];
    try {
      const policy: ImagePolicy = {
        ...DEFAULT_IMAGE_POLICY,
        exif: head.info.provenance.exif as ImagePolicy['exif'],
        icc: head.info.provenance.icc as ImagePolicy['icc'],
      };
      const spec = { preset: head.info.provenance.preset as unknown as Preset, policy, layout: backbone.input.layout };
      predictions = await predictFiles(
        files,
        head.info.classes,
        spec,
        async (pixels, count) => {
          const features = await backbone.extract(pixels, count, spec.preset.crop);
          applyNormalization(head.info.normalization, features, count, backbone.dim);
          return head.predict(features, count);
        },
        o,
      );
    } finally {
      await backbone.close();
    }
    predictions.push(...unresolved.map((u) => ({ path: u.input, top: [], error: u.error })));
    if (o.report)
      await (await import('../export/report.js')).writeReport(o.report, predictions, head.info, o.reportLimit);
    return {
      predictions,
      provider: backbone.provider,
      backend: runtime.backend,
      failed: predictions.filter((p) => p.error).length,
    };
  } finally {
    head.dispose();
  }
}

/** `--model classifier.onnx`: a bundle carries its own head, classes and preprocessing, so --head is not read. */
async function predictWithBundle(o: PredictOptions, file: string): Promise<PredictResult> {
  const { openBundle, reportInfoOf } = await import('../export/bundle.js');
  const bundle = await openBundle(file, { device: parseDevice(o.device), threads: o.threads });
  try {
    const { files, unresolved } = await expandInputs(o.inputs);
    const spec = {
      preset: bundle.preprocessing.preset,
      policy: bundle.preprocessing.policy,
      layout: bundle.layout.layout,
    };
    const predictions = await predictFiles(
      files,
      bundle.classes,
      spec,
      (pixels, count) => bundle.predict(pixels, count),
      o,
    );
    predictions.push(...unresolved.map((u) => ({ path: u.input, top: [], error: u.error })));
    if (o.report)
      await (
        await import('../export/report.js')
      ).writeReport(o.report, predictions, reportInfoOf(bundle), o.reportLimit);
    return {
      predictions,
      provider: bundle.provider,
      backend: 'onnx bundle',
      failed: predictions.filter((p) => p.error).length,
    };
  } finally {
    await bundle.close();
  }
}

type DecodeSpec = { preset: Preset; policy: ImagePolicy; layout: 'NCHW' | 'NHWC' };
type Classify = (pixels: Float32Array, count: number) => Promise<Float32Array>;

/** Files are read by sharp from their paths; URLs are fetched (bounded concurrency, retries) ahead of decoding. */
async function predictFiles(
  files: string[],
  classes: string[],
  spec: DecodeSpec,
  classify: Classify,
  o: PredictOptions,
): Promise<Prediction[]> {
  const urls = files.filter(isUrl);
  if (urls.length === 0) return predictBatches(files, classes, spec, classify, o, async (file) => file);
  const { UrlSource } = await import('../dataset/url.js');
  const source = new UrlSource(o.fetch);
  try {
    source.prefetch(urls.map((url) => ({ path: url, label: null })));
    return await predictBatches(files, classes, spec, classify, o, async (file) =>
      isUrl(file) ? (await source.read({ path: file, label: null })).bytes : file,
    );
  } finally {
    await source.close();
  }
}

/** Why an image whose backbone features (or head output) are NaN or ±Infinity gets no answer: it is a failure. */
const NON_FINITE = 'the backbone or head gave non-finite values (NaN or ±Infinity) for this image';

function finiteRow(probabilities: Float32Array, row: number, classes: number): boolean {
  return probabilities.subarray(row * classes, (row + 1) * classes).every(Number.isFinite);
}

async function predictBatches(
  files: string[],
  classes: string[],
  spec: DecodeSpec,
  classify: Classify,
  o: PredictOptions,
  bytesOf: (file: string) => Promise<Buffer | string>,
): Promise<Prediction[]> {
  const predictions: Prediction[] = [];
  for (let start = 0; start < files.length; start += o.batchSize) {
    const batch = await decodeBatch(
      files.slice(start, start + o.batchSize),
      async (file) => ({ bytes: await bytesOf(file), stamp: null }),
      spec,
    );
    const count = batch.ok.length;
    const probabilities = count > 0 ? await classify(batch.pixels, count) : new Float32Array();
    const rowOf = new Map(batch.ok.map((d, row) => [d.item, row]));
    const failed = new Map(batch.failed.map((f) => [f.item, f.message]));
    for (const file of files.slice(start, start + o.batchSize)) {
      const row = rowOf.get(file);
      predictions.push(
        row === undefined
          ? { path: file, top: [], error: failed.get(file) ?? 'unreadable' }
          : finiteRow(probabilities, row, classes.length)
            ? topPrediction(file, probabilities, row, classes, o.top)
            : { path: file, top: [], error: NON_FINITE },
      );
    }
  }
  return predictions;
}

function topPrediction(
  file: string,
  probabilities: Float32Array,
  row: number,
  classes: string[],
  k: number,
): Prediction {
  const top = topK(probabilities, classes.length, row, Math.min(k, classes.length));
  return {
    path: file,
    top: top.map((c) => ({ label: classes[c]!, probability: probabilities[row * classes.length + c]! })),
  };
}
