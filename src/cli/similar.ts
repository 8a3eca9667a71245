/** `featcache similar`: the command line of the similar job (src/jobs/similar.ts). */
import type { Argv, CommandModule } from 'yargs';
import { ExitCode } from '../errors.js';
import { DEFAULT_SIMILAR_OPTIONS as D } from '../jobs/defaults.js';
import type { SimilarResult } from '../jobs/similar.js';
import { cacheOption, emit, jsonOption, logToStderr } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

function formatSimilar(r: SimilarResult): string {
  const lines: string[] = [];
  for (const a of r.answers) {
    lines.push(`${a.query}${a.error ? `: ${a.error}` : ''}`);
    a.neighbours.forEach((n, i) =>
      lines.push(
        `  ${String(i + 1).padStart(3)}  ${n.similarity.toFixed(3)}  ${n.path}${n.label ? `  (${n.label})` : ''}`,
      ),
    );
  }
  return lines.join('\n');
}

interface SimilarArgs {
  cache: string;
  query: string[] | string;
  split: string;
  k: number;
  model?: string;
  device: string;
  report?: string;
  csv?: string;
  json: boolean;
}

export const similarCommand: CommandModule = {
  ...COMMAND_TEXT['similar'],
  builder: (y: Argv) =>
    y
      .positional('query', { type: 'string', array: true, describe: 'image files, folders, URLs or cached paths' })
      .option('cache', cacheOption)
      .option('split', { type: 'string', default: D.split, describe: 'split searched' })
      .option('k', { type: 'number', default: D.k, describe: 'neighbours per query' })
      .option('model', { type: 'string', describe: "the cache's backbone file, if it moved since extract" })
      .option('device', { type: 'string', default: D.device, describe: 'auto | cpu | cuda | cuda:N' })
      .option('report', { type: 'string', describe: 'write an HTML page with thumbnails and similarities' })
      .option('csv', { type: 'string', describe: 'write the neighbours as CSV' })
      .option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as unknown as SimilarArgs;
    const { similar } = await import('../jobs/similar.js');
    const result = await similar({
      cache: a.cache,
      queries: [a.query].flat().map(String),
      split: a.split,
      k: a.k,
      model: a.model,
      device: a.device,
      report: a.report,
      csv: a.csv,
      log: logToStderr,
    });
    emit(a.json, result, () => formatSimilar(result));
    if (result.failed > 0) process.exitCode = ExitCode.partial;
  },
};
