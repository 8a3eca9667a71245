/**
 * `featcache demo`: the seeds' ants/bees tutorial end to end — extract train and val, train a head, predict val
 * into an HTML page — with a pretrained backbone. With network it fetches what it lacks; offline it uses local
 * files (e.g. ../shared) and says which model it used.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import AdmZip from 'adm-zip';
import type { Argv, CommandModule } from 'yargs';
import { FeatcacheError, errorMessage } from '../errors.js';
import { download } from '../fetch/download.js';
import { DEFAULT_IMAGE_POLICY, getPreset } from '../image/presets.js';
import { exists } from '../util/fsx.js';
import { extract, summaryLine } from './extract.js';
import { fetchModel } from './fetch-model.js';
import { type Args, parseDevice } from './options.js';
import { predict } from './predict.js';
import { trainHead as runTrainHead, trainSummaryLine } from '../jobs/train-head.js';

const DATA_URL = 'https://download.pytorch.org/tutorial/hymenoptera_data.zip';
const LOCAL_DATA = ['data/hymenoptera_data', '../shared/data/hymenoptera_data'];
/** Pretrained models a machine may already hold, best first. The seeded fixture ResNet50 is not among them: its weights are random. */
const LOCAL_MODELS = ['models/resnet50.onnx', '../shared/models/resnet50.onnx', 'models/mobilenetv2-12-int8.onnx', '../shared/models/mobilenetv2-12-int8.onnx'];

async function firstExisting(candidates: string[]): Promise<string | null> {
  for (const c of candidates) if (await exists(c)) return c;
  return null;
}

async function resolveData(given: string | undefined, log: (l: string) => void): Promise<string> {
  if (given) {
    if (!(await exists(given))) throw new FeatcacheError(`--data ${given}: no such directory`);
    return given;
  }
  const local = await firstExisting(LOCAL_DATA);
  if (local) return local;
  log(`demo: fetching the ants/bees set from ${DATA_URL}`);
  try {
    await download({ url: DATA_URL, dest: 'data/hymenoptera_data.zip' });
  } catch (error) {
    throw new FeatcacheError(`demo: no local ants/bees data (${LOCAL_DATA.join(', ')}) and the download failed (${errorMessage(error)}); pass --data DIR`, 1);
  }
  new AdmZip('data/hymenoptera_data.zip').extractAllTo('data', true);
  return 'data/hymenoptera_data';
}

async function resolveModel(given: string | undefined, log: (l: string) => void): Promise<{ file: string; why: string }> {
  if (given) return { file: given, why: 'given with --model' };
  if (await exists('models/resnet50.onnx')) return { file: 'models/resnet50.onnx', why: 'pretrained ResNet50 already in models/' };
  try {
    const fetched = await fetchModel({ name: 'resnet50', dir: 'models', progress: true, retries: 1 });
    return { file: fetched.file, why: 'pretrained ResNet50 fetched from the ONNX Model Zoo' };
  } catch (error) {
    const local = await firstExisting(LOCAL_MODELS);
    if (!local) throw new FeatcacheError(`demo: cannot fetch resnet50 (${errorMessage(error)}) and no local pretrained model (${LOCAL_MODELS.join(', ')}); pass --model FILE`, 1);
    log(`demo: offline — could not fetch resnet50 (${errorMessage(error)})`);
    return { file: local, why: `offline fallback: the pretrained model found at ${local}` };
  }
}

export const demoCommand: CommandModule = {
  command: 'demo',
  describe: 'the ants/bees tutorial end to end: extract → train-head → predict, with an HTML report',
  builder: (y: Argv) =>
    y
      .option('data', { type: 'string', describe: `hymenoptera_data folder (default: ${LOCAL_DATA.join(' or ')}, else downloaded)` })
      .option('model', { type: 'string', describe: 'pretrained backbone (default: models/resnet50.onnx, fetched if missing; offline, a local pretrained model)' })
      .option('cache', { type: 'string', describe: 'feature cache (default: features/demo-<model name>)' })
      .option('head', { type: 'string', default: 'models/demo-head', describe: 'where to save the head' })
      .option('report', { type: 'string', default: 'demo-predictions.html', describe: 'HTML page of val predictions' })
      .option('device', { type: 'string', default: 'auto' })
      .option('epochs', { type: 'number', default: 10 }),
  handler: async (argv) => {
    const a = argv as Args;
    const log = (line: string) => process.stderr.write(`${line}\n`);
    const data = await resolveData(a.data, log);
    const model = await resolveModel(a.model, log);
    process.stdout.write(`demo: model ${model.file} (${model.why}); data ${data}\n`);
    const cache = a.cache ?? path.join('features', `demo-${path.basename(model.file, '.onnx')}`);
    for (const split of ['train', 'val']) {
      const r = await extract({
        data, split, seed: 0, model: model.file, preset: getPreset('torchvision'), policy: DEFAULT_IMAGE_POLICY, cache, device: parseDevice(a.device),
        threads: 0, batchSize: 16, partRows: 512, strict: false, retryFailed: false, progress: true, log,
      });
      process.stdout.write(`${summaryLine(r)}\n`);
    }
    const trained = await runTrainHead({
      cache, head: a.head, trainSplit: 'train', valSplit: 'val', normalize: 'l2', backend: 'auto', hidden: 0, optimizer: 'adam', lr: 0.01, momentum: 0.9,
      weightDecay: 0, stepSize: 7, gamma: 0.1, batchSize: 16, epochs: a.epochs, patience: 0, monitor: 'val_acc', classWeight: 'none', seed: 0, log,
    });
    process.stdout.write(`${trainSummaryLine(trained)}\n`);
    const predicted = await predict({ inputs: [path.join(data, 'val')], head: a.head, top: 2, batchSize: 16, device: parseDevice(a.device), threads: 0, backend: 'auto', report: a.report });
    const wrong = predicted.predictions.filter((p) => p.top[0]?.label !== path.basename(path.dirname(p.path))).length;
    process.stdout.write(`demo: predicted ${predicted.predictions.length} val images, ${wrong} wrong; open ${a.report}\n`);
    await fs.access(a.report);
  },
};
