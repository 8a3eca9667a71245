/** `featcache duplicates`: the command line of the duplicates job (src/jobs/duplicates.ts). */
import type { Argv, CommandModule } from 'yargs';
import { DEFAULT_DUPLICATES_OPTIONS as D } from '../jobs/defaults.js';
import type { DuplicatesResult } from '../jobs/duplicates.js';
import { cacheOption, emit, jsonOption, logToStderr } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

function formatDuplicates(r: DuplicatesResult, limit = 50): string {
  const lines = [
    `${r.groups.length} duplicate groups over ${r.rows} images in ${r.splits.join(', ')}: ${r.leaks} across splits (leaks), ${r.extras} copies beyond one per group (similarity ≥ ${r.threshold}, ${r.method} search)`,
  ];
  for (const [i, g] of r.groups.slice(0, limit).entries()) {
    lines.push(`  ${i + 1}. ${g.leak ? 'LEAK ' : ''}${g.kind}, ${g.members.length} images`);
    for (const [j, m] of g.members.entries())
      lines.push(`     ${j === 0 ? 'keep' : `${m.similarity.toFixed(3)}`} ${m.split}/${m.path}`);
  }
  if (r.groups.length > limit) lines.push(`  … ${r.groups.length - limit} more (--json, --csv or --report for all)`);
  return lines.join('\n');
}

export const duplicatesCommand: CommandModule = {
  ...COMMAND_TEXT['duplicates'],
  builder: (y: Argv) =>
    y
      .option('cache', cacheOption)
      .option('split', { type: 'string', array: true, describe: 'splits to search (default: all)' })
      .option('threshold', {
        type: 'number',
        default: D.threshold,
        describe: 'cosine similarity from which two images are near copies',
      })
      .option('k', { type: 'number', default: D.k, describe: 'neighbours looked at per image' })
      .option('out', { type: 'string', describe: 'write the copies one could drop (one kept per group), one per line' })
      .option('report', { type: 'string', describe: 'write an HTML page with each group side by side' })
      .option('csv', { type: 'string', describe: 'write the groups as CSV' })
      .option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as unknown as {
      cache: string;
      split?: string[];
      threshold: number;
      k: number;
      out?: string;
      report?: string;
      csv?: string;
      json: boolean;
    };
    const { duplicates } = await import('../jobs/duplicates.js');
    const splits = (a.split ?? []).flatMap((s) => s.split(',')).filter(Boolean);
    const result = await duplicates({
      cache: a.cache,
      splits,
      threshold: a.threshold,
      k: a.k,
      out: a.out,
      report: a.report,
      csv: a.csv,
      log: logToStderr,
    });
    emit(a.json, result, () => formatDuplicates(result));
  },
};
