/**
 * The saved head: a directory holding a TF.js LayersModel (model.json + weights.bin, loadable with
 * tf.loadLayersModel in a browser), head.json (classes, normalisation, provenance), and the training record.
 * Every file is written to a temporary directory first and renamed into place only when all were written, so a
 * failed save leaves the old head intact. A directory is only written into when it is new, empty, or holds
 * featcache's own head.json: then only the files featcache writes are replaced, anything else there stays.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { FeatcacheError, optionName, ExitCode, damagedFile, missingFile } from '../errors.js';
import { NORMALIZATIONS, type Normalization } from './normalize.js';
import type { Tf } from './runtime.js';
import type { DenseWeights } from './model.js';
import type { CacheManifest } from '../store/manifest.js';
import { toolVersions } from '../version.js';

/** Where a head is saved and read unless `--head` says otherwise. */
export const DEFAULT_HEAD_DIR = 'models/head';

export const HEAD_FILE = 'head.json';
/** Every file a head directory gets from featcache: the only names a save may replace. */
export const HEAD_FILES = Object.freeze([
  'model.json',
  'weights.bin',
  HEAD_FILE,
  'history.json',
  'metrics.json',
  'curves.html',
]);

export interface HeadProvenance {
  modelSha256: string;
  modelFile: string;
  tappedTensor: string;
  preset: Record<string, unknown>;
  exif: string;
  icc: string;
  precision?: 'fp32' | 'fp16' | 'int8';
  /** For int8 features: the calibration that quantised the backbone, and where that int8 model was saved. */
  calibrationHash?: string | undefined;
  int8Model?: string | undefined;
  dim: number;
  cache: string;
  trainedAt: string;
  backend: string;
  backendSkipped: string[];
  /** What trained the weights: onnxruntime (the L-BFGS probe, or mini-batch without tfjs-node) or tfjs. */
  engine?: 'tfjs' | 'onnxruntime';
  versions: Record<string, string>;
}

/**
 * What a head trained on `cacheDir` records about where its features came from (the backbone, its tap and
 * preprocessing, int8 calibration) and what trained it: one definition for every solver, so heads stay comparable.
 */
export function headProvenance(
  m: CacheManifest,
  cacheDir: string,
  runtime: { backend: string; skipped: string[] },
  engine: NonNullable<HeadProvenance['engine']>,
): HeadProvenance {
  return {
    modelSha256: m.modelSha256,
    modelFile: m.modelFile,
    tappedTensor: m.tappedTensor,
    preset: m.preset,
    exif: m.exif,
    icc: m.icc,
    precision: m.precision ?? 'fp32',
    ...(m.precision === 'int8' ? { calibrationHash: m.calibrationHash, int8Model: m.int8Model } : {}),
    dim: m.dim,
    cache: path.resolve(cacheDir),
    trainedAt: new Date().toISOString(),
    backend: runtime.backend,
    backendSkipped: runtime.skipped,
    engine,
    versions: toolVersions(),
  };
}

export interface HeadInfo {
  format: 1;
  classes: string[];
  normalization: Normalization;
  provenance: HeadProvenance;
  options: Record<string, unknown>;
  /** The restored epoch (mini-batch training); null for the L-BFGS probe, which has no epochs. */
  bestEpoch: number | null;
  summary: Record<string, unknown>;
  /** Calibrated probabilities are softmax(logits / temperature); absent means 1. */
  temperature?: number;
}

export interface SavedHead {
  info: HeadInfo;
  layers: DenseWeights[];
  /** Extra files written beside the model: history.json, metrics.json, curves.html. */
  extras: Record<string, string>;
}

function buildModel(tf: Tf, layers: DenseWeights[]) {
  const model = tf.sequential();
  layers.forEach((l, i) => {
    model.add(
      tf.layers.dense({
        units: l.shape[1],
        activation: l.activation,
        ...(i === 0 ? { inputShape: [l.shape[0]] } : {}),
      }),
    );
  });
  model.setWeights(layers.flatMap((l) => [tf.tensor2d(l.kernel, l.shape), tf.tensor1d(l.bias)]));
  return model;
}

const remedy = (dir: string) => `retrain it with 'featcache train-head --head ${dir}'`;

/** Checks a parsed head.json; returns what is wrong, or null. */
export function headInfoProblem(value: unknown): string | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'is not a JSON object';
  const info = value as Partial<HeadInfo>;
  if (info.format !== 1) return `has format ${JSON.stringify(info.format)}, expected 1`;
  if (!Array.isArray(info.classes) || info.classes.length < 2 || !info.classes.every((c) => typeof c === 'string'))
    return 'has no "classes" list of at least 2 names';
  const dim = info.provenance?.dim;
  if (typeof info.provenance !== 'object' || info.provenance === null || !Number.isInteger(dim) || dim! < 1)
    return 'has no "provenance" with a positive integer "dim"';
  if (typeof info.provenance.modelSha256 !== 'string' || typeof info.provenance.tappedTensor !== 'string')
    return 'has no "provenance.modelSha256"/"provenance.tappedTensor"';
  const n = info.normalization;
  if (typeof n !== 'object' || n === null || !(NORMALIZATIONS as readonly string[]).includes(n.kind))
    return `has no "normalization.kind" (one of ${NORMALIZATIONS.join(', ')})`;
  if (
    n.kind === 'standard' &&
    !(Array.isArray(n.mean) && Array.isArray(n.std) && n.mean.length === dim && n.std.length === dim)
  ) {
    return `has "standard" normalisation without ${dim} means and stds`;
  }
  if (
    info.temperature !== undefined &&
    !(typeof info.temperature === 'number' && Number.isFinite(info.temperature) && info.temperature > 0)
  ) {
    return `has "temperature" ${JSON.stringify(info.temperature)}, expected a positive number`;
  }
  return null;
}

/** What a head directory holds: nothing (new or empty), featcache's head, or something else (refused). */
export async function inspectHeadDir(dir: string): Promise<'new' | 'head'> {
  const stat = await fs.stat(dir).catch(() => null);
  if (!stat) return 'new';
  if (!stat.isDirectory())
    throw new FeatcacheError(
      `${optionName('head')} ${dir}: is a file, not a directory; choose a new directory for the head`,
    );
  const names = await fs.readdir(dir);
  if (names.length === 0) return 'new';
  const text = await fs.readFile(path.join(dir, HEAD_FILE), 'utf8').catch(() => null);
  if (text === null) {
    throw new FeatcacheError(
      `${optionName('head')} ${dir}: the directory is not empty and holds no featcache ${HEAD_FILE}, so featcache will not write into it; choose a new or empty directory (e.g. ${optionName('head')} ${path.join(dir, 'head')})`,
    );
  }
  let problem: string | null;
  try {
    problem = headInfoProblem(JSON.parse(text));
  } catch {
    problem = 'is not valid JSON';
  }
  if (problem)
    throw new FeatcacheError(
      `${optionName('head')} ${dir}: its ${HEAD_FILE} ${problem}, so it is not a head featcache wrote and will not be replaced; choose a new or empty directory`,
    );
  return 'head';
}

/**
 * Writes the files into a temporary sibling, then moves each into `dir`, replacing only featcache's own names.
 * Files featcache wrote before but does not write now are removed; nothing else in `dir` is touched.
 */
async function writeHeadFiles(dir: string, write: (tmp: string) => Promise<void>): Promise<void> {
  await inspectHeadDir(dir);
  const parent = path.dirname(path.resolve(dir));
  await fs.mkdir(parent, { recursive: true }).catch((error: NodeJS.ErrnoException) => {
    throw new FeatcacheError(`${optionName('head')} ${dir}: cannot create ${parent} (${error.code})`, ExitCode.failed);
  });
  // A fresh, uniquely named folder: the recursive removal below can only ever remove what this call created.
  const tmp = await fs.mkdtemp(path.join(parent, `.${path.basename(dir)}.${process.pid}.`));
  try {
    await write(tmp);
    await fs.mkdir(dir, { recursive: true });
    const written = await fs.readdir(tmp);
    // head.json last: until it is in place, a reader sees the old head.json and (mostly) the old files.
    for (const name of [...written.filter((n) => n !== HEAD_FILE), HEAD_FILE])
      await fs.rename(path.join(tmp, name), path.join(dir, name));
    for (const name of HEAD_FILES.filter((n) => !written.includes(n)))
      await fs.rm(path.join(dir, name), { force: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new FeatcacheError(
      `${optionName('head')} ${dir}: cannot write the head (${code ?? (error as Error).message}); the previous head, if any, was not replaced`,
      ExitCode.failed,
    );
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

/** @internal */
export async function saveHead(tf: Tf, dir: string, head: SavedHead): Promise<void> {
  const model = buildModel(tf, head.layers);
  await writeHeadFiles(dir, async (tmp) => {
    await model.save(
      tf.io.withSaveHandler(async (artifacts) => {
        const weightData = artifacts.weightData as ArrayBuffer;
        await fs.writeFile(path.join(tmp, 'weights.bin'), Buffer.from(weightData));
        const modelJson = {
          format: 'layers-model',
          generatedBy: `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
          convertedBy: 'featcache',
          modelTopology: artifacts.modelTopology,
          weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
        };
        await fs.writeFile(path.join(tmp, 'model.json'), JSON.stringify(modelJson));
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    await fs.writeFile(path.join(tmp, HEAD_FILE), `${JSON.stringify(head.info, null, 2)}\n`);
    for (const [name, content] of Object.entries(head.extras)) await fs.writeFile(path.join(tmp, name), content);
  });
  model.dispose();
}

export interface LoadedHead {
  info: HeadInfo;
  /** Applied by `predict`: calibrated probabilities. */
  temperature: number;
  predict(features: Float32Array, count: number): Float32Array;
  dispose(): void;
}

/** Bytes of weights.bin the manifest asks for (featcache writes float32 only). */
function expectedWeightBytes(specs: { shape: number[]; dtype?: string }[]): number {
  return specs.reduce((sum, w) => sum + w.shape.reduce((a, b) => a * b, 1) * 4, 0);
}

interface WeightSpec {
  name: string;
  shape: number[];
  dtype?: string;
}

interface ModelJson {
  modelTopology: { config?: { layers?: { class_name?: string; config?: { activation?: string } }[] } };
  weightsManifest: { weights: WeightSpec[] }[];
}

function modelJsonProblem(value: unknown, info: HeadInfo): string | null {
  if (typeof value !== 'object' || value === null) return 'is not a JSON object';
  const m = value as Partial<ModelJson>;
  if (typeof m.modelTopology !== 'object' || m.modelTopology === null) return 'has no "modelTopology"';
  if (
    !Array.isArray(m.weightsManifest) ||
    m.weightsManifest.length === 0 ||
    !m.weightsManifest.every((g) => Array.isArray(g?.weights))
  )
    return 'has no "weightsManifest" with weights';
  const specs = m.weightsManifest.flatMap((g) => g.weights);
  if (
    !specs.every(
      (w) =>
        Array.isArray(w?.shape) &&
        w.shape.every((d) => Number.isInteger(d) && d > 0) &&
        (w.dtype ?? 'float32') === 'float32',
    )
  )
    return 'lists a weight without a float32 shape';
  const first = specs[0]!.shape;
  const last = specs.at(-1)!.shape;
  if (first[0] !== info.provenance.dim)
    return `takes ${first[0]}-d inputs but head.json says the features are ${info.provenance.dim}-d`;
  if (last.length !== 1 || last[0] !== info.classes.length)
    return `has ${last.join('×')} outputs but head.json lists ${info.classes.length} classes`;
  return null;
}

/** A head's three files, read and checked against each other before any runtime sees them. */
/** @internal */
export interface CheckedHeadFiles {
  dir: string;
  info: HeadInfo;
  modelJson: ModelJson;
  weightSpecs: WeightSpec[];
  weights: Buffer;
  /** sha256 of head.json + model.json + weights.bin: identifies this exact head. */
  id: string;
}

/**
 * The one reader of a saved head: head.json, model.json and weights.bin, each checked, with the same message and exit
 * code for the same fault whoever reads it (predict through `loadHead`, bundle and serve through `readHeadFiles`).
 */
/** @internal */
export async function readCheckedHead(dir: string): Promise<CheckedHeadFiles> {
  const read = async (name: string) =>
    fs.readFile(path.join(dir, name)).catch(() => {
      throw missingFile('head', dir, `train one with 'featcache train-head --head ${dir}'`, `no ${name} here`);
    });
  const damaged = (name: string, problem: string) => damagedFile(dir, `${name} ${problem}`, remedy(dir), 'head');
  const parse = (name: string, bytes: Buffer): unknown => {
    try {
      return JSON.parse(bytes.toString('utf8'));
    } catch {
      throw damaged(name, 'is not valid JSON (truncated or edited?)');
    }
  };
  const infoBytes = await read(HEAD_FILE);
  const infoValue = parse(HEAD_FILE, infoBytes);
  const infoProblem = headInfoProblem(infoValue);
  if (infoProblem) throw damaged(HEAD_FILE, infoProblem);
  const info = infoValue as HeadInfo;
  const modelBytes = await read('model.json');
  const modelValue = parse('model.json', modelBytes);
  const modelProblem = modelJsonProblem(modelValue, info);
  if (modelProblem) throw damaged('model.json', modelProblem);
  const modelJson = modelValue as ModelJson;
  const weightSpecs = modelJson.weightsManifest.flatMap((m) => m.weights);
  const weights = await read('weights.bin');
  const expected = expectedWeightBytes(weightSpecs);
  if (weights.byteLength !== expected) {
    const why = weights.byteLength < expected ? 'truncated' : 'extra data';
    throw damaged('weights.bin', `has ${weights.byteLength} bytes but model.json needs ${expected} (${why})`);
  }
  const id = createHash('sha256').update(infoBytes).update(modelBytes).update(weights).digest('hex');
  return { dir, info, modelJson, weightSpecs, weights, id };
}

/** The head as its dense layers, without TensorFlow.js (bundle fuses them into ONNX; tests compute with them). */
export interface HeadFiles {
  dir: string;
  info: HeadInfo;
  layers: DenseWeights[];
  /** sha256 of head.json + model.json + weights.bin: identifies this exact head. */
  id: string;
}

/** The checked head read as dense kernel/bias pairs with relu between them and a final softmax. */
export async function readHeadFiles(dir: string): Promise<HeadFiles> {
  const head = await readCheckedHead(dir);
  return { dir, info: head.info, layers: denseLayers(head), id: head.id };
}

function denseLayers(head: CheckedHeadFiles): DenseWeights[] {
  const { dir, weightSpecs: specs, weights } = head;
  const activations = (head.modelJson.modelTopology.config?.layers ?? [])
    .filter((l) => l.class_name === 'Dense')
    .map((l) => l.config?.activation ?? 'linear');
  const layers: DenseWeights[] = [];
  let offset = 0;
  const take = (spec: WeightSpec): Float32Array => {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    new Uint8Array(values.buffer).set(weights.subarray(offset, offset + 4 * n));
    offset += 4 * n;
    return values;
  };
  const damaged = (problem: string) => damagedFile(dir, `model.json ${problem}`, remedy(dir), 'head');
  if (specs.length % 2 !== 0) throw damaged(`lists ${specs.length} weights; expected dense kernel/bias pairs`);
  for (let i = 0; i + 1 < specs.length; i += 2) {
    const kernel = specs[i]!;
    const bias = specs[i + 1]!;
    if (kernel.shape.length !== 2 || bias.shape.length !== 1 || bias.shape[0] !== kernel.shape[1]) {
      throw damaged(
        `has weights ${kernel.name} ${JSON.stringify(kernel.shape)} and ${bias.name} ${JSON.stringify(bias.shape)}; expected a dense kernel [in, units] then its bias [units]`,
      );
    }
    const activation = activations[layers.length] ?? (i + 2 === specs.length ? 'softmax' : 'relu');
    if (activation !== 'relu' && activation !== 'softmax')
      throw new FeatcacheError(
        `${optionName('head')}: ${dir} layer ${layers.length + 1} uses activation ${activation}; bundles support relu and a final softmax`,
        ExitCode.failed,
      );
    layers.push({ kernel: take(kernel), shape: [kernel.shape[0]!, kernel.shape[1]!], bias: take(bias), activation });
  }
  return layers;
}

/** @internal */
export async function loadHead(tf: Tf, dir: string): Promise<LoadedHead> {
  const { info, modelJson, weightSpecs, weights } = await readCheckedHead(dir);
  const model = await tf
    .loadLayersModel(
      tf.io.fromMemory({
        modelTopology: modelJson.modelTopology,
        weightSpecs: weightSpecs as never[],
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
      }),
    )
    .catch((error: Error) => {
      throw new FeatcacheError(
        `${optionName('head')} ${dir}: model.json cannot be loaded by TensorFlow.js (${error.message.split('\n')[0]}); ${remedy(dir)}`,
        ExitCode.failed,
      );
    });
  const dim = info.provenance.dim;
  const temperature = info.temperature ?? 1;
  return {
    info,
    temperature,
    predict(features, count) {
      const out = tf.tidy(() => {
        const p = model.predict(tf.tensor2d(features, [count, dim])) as ReturnType<Tf['tensor']>;
        // The saved model ends in softmax(z); softmax(log p / T) = softmax(z / T), the log-sum-exp cancels.
        return temperature === 1 ? p : tf.softmax(tf.div(tf.log(tf.maximum(p, 1e-30)), temperature));
      });
      const probabilities = out.dataSync() as Float32Array;
      out.dispose();
      return probabilities;
    },
    dispose: () => model.dispose(),
  };
}
