/** `featcache compact`: the command line of the compact job (src/jobs/compact.ts); defaults come from DEFAULT_COMPACT_OPTIONS. */
import type { Argv } from 'yargs';
import { DEFAULT_COMPACT_OPTIONS as D } from '../jobs/defaults.js';
import { defineCommand, cacheOption, emit, jsonOption } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

export const compactCommand = defineCommand({
  ...COMMAND_TEXT['compact'],
  builder: (y: Argv) =>
    y
      .option('cache', cacheOption)
      .option('split', { type: 'string', default: D.split, describe: 'split to compact' })
      .option('part-rows', { type: 'number', default: D.partRows, describe: 'rows per rewritten part file' })
      .option('json', jsonOption),
  handler: async (a) => {
    const { compactSplit } = await import('../jobs/compact.js');
    const r = await compactSplit({ cache: a.cache, split: a.split, partRows: a['part-rows'] });
    emit(a.json, r, () =>
      r.compacted
        ? `compact ${r.split}: ${r.partsBefore} parts (${r.recordsBefore} row records, ${(r.bytesBefore / 1e6).toFixed(1)} MB) → ${r.partsAfter} parts (${r.rows} rows, ${r.failures} failures, ${(r.bytesAfter / 1e6).toFixed(1)} MB)`
        : `compact ${r.split}: already compact (${r.partsBefore} parts, ${r.rows} rows)`,
    );
  },
});
