/** `featcache predict`: the command line of the predict job (src/jobs/predict.ts). */
import type { Argv } from 'yargs';
import { ExitCode } from '../errors.js';
import { BACKENDS } from '../head/runtime.js';
import type { Prediction } from '../jobs/predict.js';
import { DEFAULT_PREDICT_OPTIONS as P } from '../jobs/defaults.js';
import { csvText } from '../util/csv.js';
import { defineCommand, backboneOptions, emit, fetchFrom, fetchOptions, headOption, jsonOption } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

function table(predictions: Prediction[]): string {
  const width = Math.min(60, Math.max(...predictions.map((p) => p.path.length), 4));
  return predictions
    .map(
      (p) =>
        `${p.path.padEnd(width)}  ${p.error ? `error: ${p.error}` : p.top.map((t) => `${t.label} ${t.probability.toFixed(3)}`).join('  ')}`,
    )
    .join('\n');
}

function csv(predictions: Prediction[], k: number): string {
  const quote = csvText;
  const header = ['path', ...Array.from({ length: k }, (_, i) => [`label_${i + 1}`, `p_${i + 1}`]).flat(), 'error'];
  const rows = predictions.map((p) =>
    [
      quote(p.path),
      ...Array.from({ length: k }, (_, i) => [
        quote(p.top[i]?.label ?? ''),
        p.top[i]?.probability.toFixed(6) ?? '',
      ]).flat(),
      quote(p.error ?? ''),
    ].join(','),
  );
  return [header.join(','), ...rows].join('\n');
}

export const predictCommand = defineCommand({
  ...COMMAND_TEXT['predict'],
  builder: (y: Argv) =>
    y
      .positional('inputs', {
        type: 'string',
        array: true,
        describe: 'image files, http(s) URLs, folders, glob patterns or .txt lists of paths/URLs',
      })
      .option('head', headOption)
      .option('model', {
        type: 'string',
        describe:
          'backbone ONNX file (default: the one recorded in the head; checked by sha256), or a classifier from featcache bundle (then --head is not read)',
      })
      .option('top', { type: 'number', default: P.top, describe: 'how many classes to show per image' })
      .option('device', { ...backboneOptions.device, default: P.device })
      .option('threads', { ...backboneOptions.threads, default: P.threads })
      .option('batch-size', { ...backboneOptions['batch-size'], default: P.batchSize })
      .option('backend', {
        type: 'string',
        default: P.backend,
        choices: [...BACKENDS],
        describe: 'TensorFlow.js backend',
      })
      .option('report', {
        type: 'string',
        describe: 'write a self-contained HTML page of thumbnails titled with the prediction',
      })
      .option('report-limit', {
        type: 'number',
        default: P.reportLimit,
        describe: 'at most this many thumbnails in the report',
      })
      .option('csv', { type: 'boolean', default: false, describe: 'CSV on stdout' })
      .option('json', { ...jsonOption, describe: 'one JSON object per image (JSON lines) on stdout' })
      .options(fetchOptions),
  handler: async (a) => {
    const { predict } = await import('../jobs/predict.js');
    const result = await predict({
      inputs: a.inputs!,
      head: a.head,
      model: a.model,
      top: a.top,
      batchSize: a['batch-size'],
      device: a.device,
      threads: a.threads,
      backend: a.backend,
      report: a.report,
      reportLimit: a['report-limit'],
      fetch: fetchFrom(a),
    });
    if (a.json) process.stdout.write(result.predictions.map((p) => JSON.stringify(p)).join('\n') + '\n');
    else if (a.csv) process.stdout.write(`${csv(result.predictions, a.top)}\n`);
    else emit(false, result, () => table(result.predictions));
    if (result.failed > 0)
      process.stderr.write(`predict: ${result.failed} of ${result.predictions.length} images could not be read\n`);
    if (a.report) process.stderr.write(`predict: report written to ${a.report}\n`);
    process.exitCode = result.failed > 0 ? ExitCode.partial : ExitCode.ok;
  },
});
