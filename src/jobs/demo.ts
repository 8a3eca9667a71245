/**
 * The demo job: the seeds' ants/bees tutorial end to end — extract train and val, train a head, predict val
 * into an HTML page — with a pretrained backbone. With network it fetches what it lacks; offline it uses local
 * files (e.g. ../shared) and says which model it used.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import AdmZip from 'adm-zip';
import { FeatcacheError, optionName, errorMessage, ExitCode } from '../errors.js';
import { download } from '../fetch/download.js';
import { exists } from '../util/fsx.js';
import { withDefaults } from '../util/options.js';
import { fetchModel } from './fetch-model.js';
import { type TrainHeadResult, trainHead } from './train-head.js';
import { type ExtractResult, extract } from './extract.js';
import { type PredictResult, predict } from './predict.js';
import { DEFAULT_DEMO_OPTIONS } from './defaults.js';

export { DEFAULT_DEMO_OPTIONS };

const DATA_URL = 'https://download.pytorch.org/tutorial/hymenoptera_data.zip';
const LOCAL_DATA = ['data/hymenoptera_data', '../shared/data/hymenoptera_data'];
/** Pretrained models a machine may already hold, best first. The seeded fixture ResNet50 is not among them: its weights are random. */
const LOCAL_MODELS = [
  'models/resnet50.onnx',
  '../shared/models/resnet50.onnx',
  'models/mobilenetv2-12-int8.onnx',
  '../shared/models/mobilenetv2-12-int8.onnx',
];

async function firstExisting(candidates: string[]): Promise<string | null> {
  for (const c of candidates) if (await exists(c)) return c;
  return null;
}

async function resolveData(given: string | undefined, log: (l: string) => void): Promise<string> {
  if (given) {
    if (!(await exists(given))) throw new FeatcacheError(`${optionName('data')} ${given}: no such directory`);
    return given;
  }
  const local = await firstExisting(LOCAL_DATA);
  if (local) return local;
  log(`demo: fetching the ants/bees set from ${DATA_URL}`);
  try {
    await download({ url: DATA_URL, dest: 'data/hymenoptera_data.zip' });
  } catch (error) {
    throw new FeatcacheError(
      `demo: no local ants/bees data (${LOCAL_DATA.join(', ')}) and the download failed (${errorMessage(error)}); pass --data DIR`,
      ExitCode.failed,
    );
  }
  new AdmZip('data/hymenoptera_data.zip').extractAllTo('data', true);
  return 'data/hymenoptera_data';
}

async function resolveModel(
  given: string | undefined,
  log: (l: string) => void,
): Promise<{ file: string; why: string }> {
  if (given) return { file: given, why: 'given with --model' };
  if (await exists('models/resnet50.onnx'))
    return { file: 'models/resnet50.onnx', why: 'pretrained ResNet50 already in models/' };
  try {
    const fetched = await fetchModel({ name: 'resnet50', dir: 'models', retries: 1, log });
    return { file: fetched.file, why: `pretrained ResNet50 fetched from ${fetched.source ?? 'models/'}` };
  } catch (error) {
    const local = await firstExisting(LOCAL_MODELS);
    if (!local)
      throw new FeatcacheError(
        `demo: cannot fetch resnet50 (${errorMessage(error)}) and no local pretrained model (${LOCAL_MODELS.join(', ')}); pass --model FILE`,
        ExitCode.failed,
      );
    log(`demo: offline — could not fetch resnet50 (${errorMessage(error)})`);
    return { file: local, why: `offline fallback: the pretrained model found at ${local}` };
  }
}

export interface DemoOptions {
  /** hymenoptera_data folder; default: a local copy, else downloaded. */
  data?: string | undefined;
  /** Pretrained backbone; default: models/resnet50.onnx, fetched if missing; offline, a local pretrained model. */
  model?: string | undefined;
  /** Feature cache; default: features/demo-<model name>. */
  cache?: string | undefined;
  /** Where to save the head. */
  head: string;
  /** HTML page of val predictions. */
  report: string;
  device: string;
  /** Epochs of the head; default: chosen by its sweep. */
  epochs?: number | undefined;
  progress: boolean;
  log?: ((line: string) => void) | undefined;
}

export interface DemoResult {
  data: string;
  model: { file: string; why: string };
  extracted: ExtractResult[];
  trained: TrainHeadResult;
  predicted: PredictResult;
  /** Val images whose top prediction is not their folder's class. */
  wrong: number;
  report: string;
}

/**
 * The ants/bees tutorial end to end: extract train and val, train a head, predict val into an HTML report.
 *
 * @example
 * const r = await demo({ data: 'hymenoptera_data', model: 'models/resnet50.onnx' });
 * console.log(r.trained.metrics.top1, r.report);
 */
export async function demo(options: Partial<DemoOptions> = {}): Promise<DemoResult> {
  const o: DemoOptions = withDefaults(DEFAULT_DEMO_OPTIONS, options);
  const log = o.log ?? (() => {});
  const data = await resolveData(o.data, log);
  const model = await resolveModel(o.model, log);
  log(`demo: model ${model.file} (${model.why}); data ${data}`);
  const cache = o.cache ?? path.join('features', `demo-${path.basename(model.file, '.onnx')}`);
  const extracted: ExtractResult[] = [];
  for (const split of ['train', 'val']) {
    extracted.push(
      await extract({ data, split, model: model.file, cache, device: o.device, progress: o.progress, log }),
    );
  }
  // The head tunes itself (the L-BFGS probe: C, normalisation and temperature chosen on train): the default a user gets.
  const trained = await trainHead({ cache, head: o.head, epochs: o.epochs, log });
  const predicted = await predict({
    inputs: [path.join(data, 'val')],
    head: o.head,
    top: 2,
    device: o.device,
    report: o.report,
  });
  const wrong = predicted.predictions.filter((p) => p.top[0]?.label !== path.basename(path.dirname(p.path))).length;
  await fs.access(o.report);
  return { data, model, extracted, trained, predicted, wrong, report: o.report };
}
