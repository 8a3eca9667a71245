/**
 * `featcache predict`: image → backbone → head. Uses the backbone, tap and preprocessing recorded in the head, so a
 * prediction sees exactly the features the head was trained on; a mismatched backbone is refused.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import fg from 'fast-glob';
import sharp from 'sharp';
import type { Argv, CommandModule } from 'yargs';
import { type Backbone, openBackbone } from '../backbone/index.js';
import { isImageName, walkImages } from '../dataset/walk.js';
import { ExitCode, FeatcacheError, errorMessage } from '../errors.js';
import { topK } from '../head/metrics.js';
import { applyNormalization } from '../head/normalize.js';
import { BACKENDS, type BackendChoice, loadTf } from '../head/runtime.js';
import { type LoadedHead, loadHead } from '../head/saved.js';
import { decodeToRgb, writeNormalised } from '../image/preprocess.js';
import { DEFAULT_IMAGE_POLICY, type ImagePolicy, type Preset } from '../image/presets.js';
import { exists } from '../util/fsx.js';
import { escapeHtml, page } from '../util/html.js';
import { type Args, DEFAULT_HEAD, backboneOptions, emit, jsonOption, nonNegativeInteger, parseDevice, positiveInteger } from './options.js';

export interface Prediction {
  path: string;
  top: { label: string; probability: number }[];
  error?: string;
}

export interface PredictOptions {
  inputs: string[];
  head: string;
  model?: string | undefined;
  top: number;
  batchSize: number;
  device: ReturnType<typeof parseDevice>;
  threads: number;
  backend: BackendChoice;
  report?: string | undefined;
  /** Thumbnails in the report at most; the page says how many were left out. */
  reportLimit?: number | undefined;
}

/** Files, directories (walked recursively) and glob patterns, in the order given, without duplicates. */
export async function expandInputs(inputs: string[]): Promise<string[]> {
  const files: string[] = [];
  for (const input of inputs) {
    const stat = await fs.stat(input).catch(() => null);
    if (stat?.isDirectory()) files.push(...(await walkImages(input)).images.map((p) => path.join(input, p)));
    else if (stat) files.push(input);
    else {
      const matches = (await fg(input, { onlyFiles: true, dot: false })).filter(isImageName).sort();
      if (matches.length === 0) throw new FeatcacheError(`${input}: no such file, and as a glob it matches no images`);
      files.push(...matches);
    }
  }
  return [...new Set(files)];
}

async function checkedBackbone(head: LoadedHead, options: PredictOptions): Promise<Backbone> {
  const p = head.info.provenance;
  const modelFile = options.model ?? p.modelFile;
  if (!(await exists(modelFile))) {
    throw new FeatcacheError(`--model ${modelFile}: not found; the head ${options.head} was trained on features of that file (sha256 ${p.modelSha256.slice(0, 12)}…) — pass its current path with --model`);
  }
  return openBackbone(modelFile, {
    tap: p.tappedTensor, device: options.device, threads: options.threads, fp16: p.precision === 'fp16',
    expect: { sha256: p.modelSha256, what: `the backbone the head ${options.head} was trained on` },
  });
}

export async function predict(options: PredictOptions): Promise<{ predictions: Prediction[]; provider: string; backend: string }> {
  const runtime = await loadTf(options.backend);
  const head = await loadHead(runtime.tf, options.head);
  const files = await expandInputs(options.inputs);
  const backbone = await checkedBackbone(head, options);
  const preset = head.info.provenance.preset as unknown as Preset;
  const policy: ImagePolicy = { ...DEFAULT_IMAGE_POLICY, exif: head.info.provenance.exif as ImagePolicy['exif'], icc: head.info.provenance.icc as ImagePolicy['icc'] };
  const classes = head.info.classes;
  const dim = backbone.dim;
  const predictions: Prediction[] = [];
  for (let start = 0; start < files.length; start += options.batchSize) {
    const batch = files.slice(start, start + options.batchSize);
    const decoded = await Promise.all(batch.map((file) => decodeToRgb(file, preset, policy).then((rgb) => ({ file, rgb }), (error) => ({ file, error: errorMessage(error) }))));
    const ok = decoded.filter((d): d is { file: string; rgb: Buffer } => 'rgb' in d);
    const pixels = new Float32Array(ok.length * preset.crop * preset.crop * 3);
    ok.forEach((d, i) => writeNormalised(d.rgb, preset, backbone.input.layout, pixels, i));
    const features = ok.length > 0 ? await backbone.extract(pixels, ok.length, preset.crop) : new Float32Array();
    applyNormalization(head.info.normalization, features, ok.length, dim);
    const probabilities = ok.length > 0 ? head.predict(features, ok.length) : new Float32Array();
    const byFile = new Map(ok.map((d, i) => [d.file, i]));
    for (const d of decoded) {
      const row = byFile.get(d.file);
      if (row === undefined) {
        predictions.push({ path: d.file, top: [], error: 'error' in d ? d.error : 'unreadable' });
        continue;
      }
      const top = topK(probabilities, classes.length, row, Math.min(options.top, classes.length));
      predictions.push({ path: d.file, top: top.map((c) => ({ label: classes[c]!, probability: probabilities[row * classes.length + c]! })) });
    }
  }
  await backbone.close();
  head.dispose();
  if (options.report) await writeReport(options.report, predictions, head.info, options.reportLimit ?? DEFAULT_REPORT_LIMIT);
  return { predictions, provider: backbone.provider, backend: runtime.backend };
}

/** The seeds' visualize_model as a page: thumbnails titled "predicted: <class> (p)", embedded so the file stands alone. */
const DEFAULT_REPORT_LIMIT = 1000;

async function writeReport(file: string, predictions: Prediction[], info: LoadedHead['info'], limit: number): Promise<void> {
  const classes = info.classes;
  const figures: string[] = [];
  let knownCount = 0;
  let correct = 0;
  for (const [index, p] of predictions.entries()) {
    const truth = path.basename(path.dirname(p.path));
    const known = classes.includes(truth);
    if (p.error) {
      figures.push(`<figure><figcaption class="wrong">${escapeHtml(path.basename(p.path))}: ${escapeHtml(p.error)}</figcaption></figure>`);
      continue;
    }
    const best = p.top[0]!;
    const wrong = known && truth !== best.label;
    if (known) {
      knownCount++;
      if (!wrong) correct++;
    }
    if (index >= limit) continue;
    const thumb = await sharp(p.path, { pages: 1 }).resize(224, 224, { fit: 'cover' }).jpeg({ quality: 80 }).toBuffer().catch(() => null);
    figures.push(
      `<figure>${thumb ? `<img alt="${escapeHtml(p.path)}" src="data:image/jpeg;base64,${thumb.toString('base64')}">` : ''}` +
        `<figcaption class="${wrong ? 'wrong' : ''}">predicted: ${escapeHtml(best.label)} (${best.probability.toFixed(2)})` +
        `${known ? `<br><span class="muted">true: ${escapeHtml(truth)}</span>` : ''}<br><span class="muted">${escapeHtml(path.basename(p.path))}</span></figcaption></figure>`,
    );
  }
  await fs.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  const p = info.provenance;
  const summary = `<p>${knownCount > 0 ? `${correct} of ${knownCount} images in a class folder predicted correctly (${((100 * correct) / knownCount).toFixed(1)}%); ` : ''}` +
    `backbone ${escapeHtml(path.basename(p.modelFile))} (sha256 ${p.modelSha256.slice(0, 12)}…), tap ${escapeHtml(p.tappedTensor)}, preset ${escapeHtml(String(p.preset.name))}.` +
    `${predictions.length > limit ? ` Showing the first ${limit} of ${predictions.length} images (--report-limit).` : ''}</p>`;
  await fs.writeFile(file, page(`featcache predictions (${predictions.length} images)`, `${summary}<div class="grid">${figures.join('\n')}</div>`));
}

function table(predictions: Prediction[]): string {
  const width = Math.min(60, Math.max(...predictions.map((p) => p.path.length), 4));
  return predictions
    .map((p) => `${p.path.padEnd(width)}  ${p.error ? `error: ${p.error}` : p.top.map((t) => `${t.label} ${t.probability.toFixed(3)}`).join('  ')}`)
    .join('\n');
}

function csv(predictions: Prediction[], k: number): string {
  const quote = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const header = ['path', ...Array.from({ length: k }, (_, i) => [`label_${i + 1}`, `p_${i + 1}`]).flat(), 'error'];
  const rows = predictions.map((p) => [quote(p.path), ...Array.from({ length: k }, (_, i) => [quote(p.top[i]?.label ?? ''), p.top[i]?.probability.toFixed(6) ?? '']).flat(), quote(p.error ?? '')].join(','));
  return [header.join(','), ...rows].join('\n');
}

export const predictCommand: CommandModule = {
  command: 'predict <inputs..>',
  describe: 'classify images (files, folders, globs) with a trained head: top-k labels',
  builder: (y: Argv) =>
    y
      .positional('inputs', { type: 'string', array: true, describe: 'image files, folders or glob patterns' })
      .option('head', { type: 'string', default: DEFAULT_HEAD, describe: 'head directory written by train-head' })
      .option('model', { type: 'string', describe: 'backbone ONNX file (default: the one recorded in the head; checked by sha256)' })
      .option('top', { type: 'number', default: 3, describe: 'how many classes to show per image' })
      .option('device', backboneOptions.device)
      .option('threads', backboneOptions.threads)
      .option('batch-size', backboneOptions['batch-size'])
      .option('backend', { type: 'string', default: 'auto', choices: [...BACKENDS], describe: 'TensorFlow.js backend' })
      .option('report', { type: 'string', describe: 'write a self-contained HTML page of thumbnails titled with the prediction' })
      .option('report-limit', { type: 'number', default: DEFAULT_REPORT_LIMIT, describe: 'at most this many thumbnails in the report' })
      .option('csv', { type: 'boolean', default: false, describe: 'CSV on stdout' })
      .option('json', { ...jsonOption, describe: 'one JSON object per image (JSON lines) on stdout' }),
  handler: async (argv) => {
    const a = argv as Args;
    const top = positiveInteger('--top', a.top);
    const result = await predict({
      inputs: a.inputs, head: a.head, model: a.model, top, batchSize: positiveInteger('--batch-size', a['batch-size']),
      device: parseDevice(a.device), threads: nonNegativeInteger('--threads', a.threads), backend: a.backend, report: a.report,
      reportLimit: positiveInteger('--report-limit', a['report-limit']),
    });
    if (a.json) process.stdout.write(result.predictions.map((p) => JSON.stringify(p)).join('\n') + '\n');
    else if (a.csv) process.stdout.write(`${csv(result.predictions, top)}\n`);
    else emit(false, result, () => table(result.predictions));
    const failed = result.predictions.filter((p) => p.error).length;
    if (failed > 0) process.stderr.write(`predict: ${failed} of ${result.predictions.length} images could not be read\n`);
    if (a.report) process.stderr.write(`predict: report written to ${a.report}\n`);
    process.exitCode = failed > 0 ? ExitCode.partial : ExitCode.ok;
  },
};
