/**
 * The saved head: a directory holding a TF.js LayersModel (model.json + weights.bin, loadable with
 * tf.loadLayersModel in a browser), head.json (classes, normalisation, provenance), and the training record.
 * It is written to a temporary sibling and renamed into place, so a failed save never leaves half a head.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError } from '../errors.js';
import type { Normalization } from '../store/normalize.js';
import type { Tf } from './runtime.js';
import type { DenseWeights } from './train.js';

export const HEAD_FILE = 'head.json';

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
  versions: Record<string, string>;
}

export interface HeadInfo {
  format: 1;
  classes: string[];
  normalization: Normalization;
  provenance: HeadProvenance;
  options: Record<string, unknown>;
  bestEpoch: number;
  summary: Record<string, unknown>;
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
    model.add(tf.layers.dense({ units: l.shape[1], activation: l.activation, ...(i === 0 ? { inputShape: [l.shape[0]] } : {}) }));
  });
  model.setWeights(layers.flatMap((l) => [tf.tensor2d(l.kernel, l.shape), tf.tensor1d(l.bias)]));
  return model;
}

async function writeDirAtomic(dir: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const parent = path.dirname(path.resolve(dir));
  await fs.mkdir(parent, { recursive: true }).catch((error: NodeJS.ErrnoException) => {
    throw new FeatcacheError(`--head ${dir}: cannot create ${parent} (${error.code})`, 1);
  });
  const tmp = path.join(parent, `.${path.basename(dir)}.${process.pid}.tmp`);
  const old = path.join(parent, `.${path.basename(dir)}.${process.pid}.old`);
  await fs.rm(tmp, { recursive: true, force: true });
  try {
    await fs.mkdir(tmp);
    await write(tmp);
    const hadOld = await fs.rename(dir, old).then(() => true, () => false);
    await fs.rename(tmp, dir);
    if (hadOld) await fs.rm(old, { recursive: true, force: true });
  } catch (error) {
    await fs.rm(tmp, { recursive: true, force: true });
    const code = (error as NodeJS.ErrnoException).code;
    throw new FeatcacheError(`--head ${dir}: cannot write the head (${code ?? (error as Error).message}); nothing was replaced`, 1);
  }
}

export async function saveHead(tf: Tf, dir: string, head: SavedHead): Promise<void> {
  const model = buildModel(tf, head.layers);
  await writeDirAtomic(dir, async (tmp) => {
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
  predict(features: Float32Array, count: number): Float32Array;
  dispose(): void;
}

export async function loadHead(tf: Tf, dir: string): Promise<LoadedHead> {
  const read = async (name: string) =>
    fs.readFile(path.join(dir, name)).catch(() => {
      throw new FeatcacheError(`--head ${dir}: no ${name} here; train one with 'featcache train-head --head ${dir}'`);
    });
  let info: HeadInfo;
  let modelJson: { modelTopology: object; weightsManifest: { weights: never[] }[] };
  try {
    info = JSON.parse((await read(HEAD_FILE)).toString('utf8')) as HeadInfo;
    modelJson = JSON.parse((await read('model.json')).toString('utf8'));
  } catch (error) {
    if (error instanceof FeatcacheError) throw error;
    throw new FeatcacheError(`--head ${dir}: head.json or model.json is not valid JSON`, 1);
  }
  const weights = await read('weights.bin');
  const model = await tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: modelJson.modelTopology,
      weightSpecs: modelJson.weightsManifest.flatMap((m) => m.weights),
      weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
    }),
  );
  const dim = info.provenance.dim;
  return {
    info,
    predict(features, count) {
      const out = tf.tidy(() => model.predict(tf.tensor2d(features, [count, dim])) as ReturnType<Tf['tensor']>);
      const probabilities = out.dataSync() as Float32Array;
      out.dispose();
      return probabilities;
    },
    dispose: () => model.dispose(),
  };
}
