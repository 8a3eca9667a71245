/** `featcache export`: the command line of the export job (src/jobs/export.ts); defaults come from DEFAULT_EXPORT_OPTIONS. */
import type { Argv } from 'yargs';
import { FORMATS, UNLABELLED } from '../export/format-names.js';
import { DEFAULT_EXPORT_OPTIONS as D } from '../jobs/defaults.js';
import type { ExportOptions } from '../jobs/export.js';
import { NORMALIZATIONS } from '../head/normalize.js';
import { defineCommand, cacheOption, emit, jsonOption, logToStderr } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

export const exportCommand = defineCommand({
  ...COMMAND_TEXT['export'],
  builder: (y: Argv) =>
    y
      .option('cache', cacheOption)
      .option('split', { type: 'string', default: D.split, describe: 'cached split to export' })
      .option('format', {
        type: 'string',
        default: D.format,
        describe: `${FORMATS.join(' | ')}. parquet/arrow: one file with the cache's columns (class names, provenance in its metadata); libsvm/svmlight: "label i:v" (1-based, zeros omitted); npy: a directory of .npy files; csv: header + one row per image`,
      })
      .option('out', {
        type: 'string',
        demandOption: true,
        describe:
          'output file (npy: a new, empty or featcache-written directory); "-", devices and FIFOs are written through',
      })
      .option('normalize', {
        type: 'string',
        default: D.normalize,
        describe: `${NORMALIZATIONS.join(' | ')}: l2 per row, standard with mean/std fitted on --fit-split`,
      })
      .option('stats', {
        type: 'string',
        describe: 'reuse standard statistics saved by an earlier export (…stats.json)',
      })
      .option('fit-split', {
        type: 'string',
        default: D.fitSplit,
        describe: 'split whose statistics standardise every export',
      })
      .option('json', jsonOption),
  handler: async (a) => {
    const { exportSplit } = await import('../jobs/export.js');
    const r = await exportSplit({
      // The job validates every value (and names the flag in its message).
      cache: a.cache,
      split: a.split,
      format: a.format as ExportOptions['format'],
      out: a.out,
      normalize: a.normalize as ExportOptions['normalize'],
      stats: a.stats ?? null,
      fitSplit: a['fit-split'],
      log: logToStderr,
    });
    // With --out - the data owns stdout: the summary goes to stderr.
    const human = () =>
      `export ${r.split}: ${r.rows} rows × ${r.dim} (${r.normalization.kind}) → ${r.files.join(', ')}` +
      (r.bytes === null ? '' : ` (${(r.bytes / 1e6).toFixed(1)} MB, ${r.mbPerSecond!.toFixed(1)} MB/s)`) +
      (r.format === 'parquet' || r.format === 'arrow' ? '' : `; unlabelled rows have label ${UNLABELLED}`);
    if (['-', '/dev/stdout', '/dev/fd/1', '/proc/self/fd/1'].includes(a.out))
      process.stderr.write(`${a.json ? JSON.stringify(r) : human()}\n`);
    else emit(a.json, r, human);
  },
});
