/** `featcache extract`: the command line of the extract job (src/jobs/extract.ts). */
import type { Argv, CommandModule } from 'yargs';
import { type ExtractResult, DEFAULT_EXTRACT_OPTIONS as X, extract } from '../jobs/extract.js';
import {
  type Args,
  backboneOptions,
  cacheOption,
  emit,
  fetchFrom,
  fetchOptions,
  imageOptions,
  jsonOption,
  logToStderr,
} from './flags.js';

export function summaryLine(r: ExtractResult): string {
  const t = r.timings;
  const failed =
    (r.failed > 0 ? `; ${r.failed} failed (see 'featcache info --cache ${r.cache} --failures')` : '') +
    (r.ledgerFailed > 0
      ? `; ${r.ledgerFailed} failed in an earlier run and are still in the ledger (--retry-failed retries them)`
      : '');
  const skipped = r.skipped.length > 0 ? `; ${r.skipped.length} non-image files skipped` : '';
  const stopped = r.interrupted ? ' — interrupted; re-run the same command to resume' : '';
  return (
    `extract ${r.split}: ${r.extracted} extracted, ${r.unchanged} unchanged, ${r.removed} removed of ${r.dataset} images → ${r.cache}/${r.split} ` +
    `(${r.dim}-d, ${r.provider}${r.precision === 'fp32' ? '' : ` ${r.precision}`}, ${r.imagesPerSecond.toFixed(1)} img/s; ${t.wallS.toFixed(1)} s: decode ${t.decodeWaitS.toFixed(1)} s exposed ` +
    `(${t.decodeBusyS.toFixed(1)} s busy), inference ${t.inferS.toFixed(1)} s, write ${t.writeS.toFixed(1)} s, setup ${t.setupS.toFixed(1)} s; bottleneck: ${r.bottleneck})` +
    `${failed}${skipped}${stopped}`
  );
}

export const extractCommand: CommandModule = {
  command: 'extract',
  describe: 'run the backbone over a dataset split and cache tapped features in Arrow files',
  builder: (y: Argv) =>
    y
      .option('data', {
        type: 'string',
        demandOption: true,
        describe:
          "dataset root (ImageFolder), image folder, .txt list of images or http(s) URLs, CSV of URLs, or WebDataset shards ('shards/train-{000000..000099}.tar' or a glob)",
      })
      .option('split', {
        type: 'string',
        default: X.split,
        describe: 'split to extract: a split folder (train/val/test/training/…), or train/val with --val-fraction',
      })
      .option('labels', { type: 'string', describe: 'CSV of id,label (Kaggle layout); images in --images' })
      .option('images', {
        type: 'string',
        describe: 'image directory for --labels (default <data>/<split>, else <data>/train)',
      })
      .option('val-fraction', {
        type: 'number',
        describe: 'stratified validation fraction when the data has no split folders',
      })
      .option('seed', { type: 'number', default: X.seed, describe: 'seed of the stratified split' })
      .option('follow-symlinks', {
        type: 'boolean',
        default: X.followSymlinks,
        describe: 'read symlinks that lead outside the data folder (refused by default)',
      })
      .option('cache', cacheOption)
      .options(backboneOptions)
      .options(imageOptions)
      .options(fetchOptions)
      .option('shard', {
        type: 'string',
        describe:
          'K/N: process only shard K (0-based) of N (tar shards: whole tar files); run N processes into the same cache',
      })
      .option('fp16', {
        type: 'boolean',
        default: X.fp16,
        describe: 'run the backbone in float16 (for GPUs; features stay float32)',
      })
      .option('int8', {
        type: 'boolean',
        default: X.int8,
        describe:
          'CPU: run an int8 copy of the backbone calibrated on your images (~3.5× faster; features not interchangeable with FP32)',
      })
      .option('calibrate', {
        type: 'number',
        default: X.calibrate,
        describe: 'images sampled (seeded, from the train split) to calibrate --int8',
      })
      .option('calibration-ranges', {
        type: 'string',
        default: X.calibrationRanges,
        choices: ['mse', 'minmax', 'percentile'],
        describe: 'how --int8 picks activation ranges',
      })
      .option('calibration-percentile', {
        type: 'number',
        default: X.calibrationPercentile,
        describe: 'upper percentile kept by --calibration-ranges percentile',
      })
      .option('int8-dir', { type: 'string', describe: 'where the int8 model is saved (default: beside --model)' })
      .option('part-rows', {
        type: 'number',
        default: X.partRows,
        describe: 'images per committed part file (the most a kill can lose)',
      })
      .option('strict', {
        type: 'boolean',
        default: X.strict,
        describe: 'stop at the first unusable image (default: record it and go on)',
      })
      .option('retry-failed', {
        type: 'boolean',
        default: X.retryFailed,
        describe: 'retry images that failed in earlier runs',
      })
      .option('progress', { type: 'boolean', default: true, describe: 'progress bar on a terminal' })
      .option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as Args;
    const result = await extract({
      data: a.data,
      split: a.split,
      labels: a.labels,
      images: a.images,
      valFraction: a['val-fraction'],
      seed: a.seed,
      shard: a.shard,
      followSymlinks: a['follow-symlinks'],
      model: a.model,
      tap: a.tap,
      preset: a.preset,
      exif: a.exif,
      icc: a.icc,
      maxPixels: a['max-pixels'],
      cache: a.cache,
      device: a.device,
      threads: a.threads,
      fp16: a.fp16,
      batchSize: a['batch-size'],
      partRows: a['part-rows'],
      int8: a.int8,
      calibrate: a.calibrate,
      calibrationRanges: a['calibration-ranges'],
      calibrationPercentile: a['calibration-percentile'],
      int8Dir: a['int8-dir'],
      strict: a.strict,
      retryFailed: a['retry-failed'],
      progress: a.progress && !a.json,
      log: logToStderr,
      fetch: fetchFrom(a),
    });
    emit(a.json, result, () => summaryLine(result));
    process.exitCode = result.exitCode;
  },
};
