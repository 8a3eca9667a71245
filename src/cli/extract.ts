/** `featcache extract`: the command line of the extract job (src/jobs/extract.ts). */
import type { Argv } from 'yargs';
import { COMMAND_TEXT } from './command-text.js';
import { RANGE_METHODS } from '../backbone/int8-defaults.js';
import type { ExtractOptions } from '../jobs/extract.js';
import { DEFAULT_EXTRACT_OPTIONS as X } from '../jobs/defaults.js';
import {
  defineCommand,
  backboneOptions,
  cacheOption,
  emit,
  fetchFrom,
  fetchOptions,
  imageOptions,
  jsonOption,
  logToStderr,
} from './flags.js';
import { extractSummaryLine } from './summary.js';

export const extractCommand = defineCommand({
  ...COMMAND_TEXT['extract'],
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
      // No yargs defaults for the three calibration flags: the job must tell a value given from a default, since a
      // calibrated cache keeps its own and refuses only a different value given.
      .option('calibrate', {
        type: 'number',
        describe: `images sampled (seeded, from the train split) to calibrate --int8 (default ${X.calibrate}; a cache keeps the calibration it was made with)`,
      })
      .option('calibration-ranges', {
        type: 'string',
        choices: RANGE_METHODS,
        describe: `how --int8 picks activation ranges (default ${X.calibrationRanges})`,
      })
      .option('calibration-percentile', {
        type: 'number',
        describe: `upper percentile kept by --calibration-ranges percentile (default ${X.calibrationPercentile})`,
      })
      .option('int8-dir', {
        type: 'string',
        describe:
          "where the int8 model is saved (default: featcache's cache folder, FEATCACHE_CACHE_DIR or ~/.cache/featcache)",
      })
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
  handler: async (a) => {
    const { extract } = await import('../jobs/extract.js');
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
      // Checked by the job, which names the flag and its values.
      exif: a.exif as ExtractOptions['exif'],
      icc: a.icc as ExtractOptions['icc'],
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
    emit(a.json, result, () => extractSummaryLine(result));
    process.exitCode = result.exitCode;
  },
});
