/** `featcache audit`: the command line of the audit job (src/jobs/audit.ts); defaults come from DEFAULT_AUDIT_OPTIONS. */
import type { Argv, CommandModule } from 'yargs';
import { FILTERS, RANK_BY } from '../audit/confident.js';
import type { AuditOptions, AuditResult } from '../jobs/audit.js';
import { DEFAULT_AUDIT_OPTIONS as D } from '../jobs/defaults.js';
import { cacheOption, emit, jsonOption, logToStderr } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

function human(r: AuditResult, top: number, summary: (r: AuditResult) => string[]): string {
  const m = r.classes.length;
  const lines = [...summary(r)];
  if (m <= 12) {
    lines.push('', 'estimated noise matrix, P(likely true | given): rows given, columns likely true');
    const width = Math.max(8, ...r.classes.map((c) => c.length));
    lines.push(`${''.padEnd(width)} ${r.classes.map((c) => c.slice(0, 7).padStart(7)).join(' ')}`);
    r.classes.forEach((c, i) =>
      lines.push(
        `${c.padEnd(width)} ${Array.from({ length: m }, (_, j) => r.noiseMatrix[i * m + j]!.toFixed(3).padStart(7)).join(' ')}`,
      ),
    );
  }
  const show = (title: string, issues: AuditResult['labelIssues']) => {
    lines.push('', `${title}: ${issues.length}${issues.length > top ? ` (worst ${top} shown)` : ''}`);
    for (const i of issues.slice(0, top))
      lines.push(
        `  ${i.path}  given ${i.given}${i.suggested && i.suggested !== i.given ? ` → ${i.suggested}` : ''}  quality ${i.labelQuality?.toFixed(3) ?? '-'}  kNN ${i.knnDisagreement.toFixed(2)}  distance ${i.meanNeighbourDistance.toFixed(3)}${i.confidentLearning ? '  [CL]' : ''}${i.knnFlag ? '  [kNN]' : ''}${i.distanceOutlier ? '  [far]' : ''}${i.flat ? '  [flat]' : ''}`,
      );
  };
  show('label issues', r.labelIssues);
  show('outliers', r.outliers);
  if (r.written.length > 0) lines.push('', `written: ${r.written.join(', ')}`);
  return lines.join('\n');
}

export const auditCommand: CommandModule = {
  ...COMMAND_TEXT['audit'],
  builder: (y: Argv) =>
    y
      .option('cache', cacheOption)
      .option('split', { type: 'string', default: D.split, describe: 'split to audit' })
      .option('k', {
        type: 'number',
        default: D.k,
        describe: 'nearest neighbours for the consensus and outlier scores',
      })
      .option('rank', {
        type: 'string',
        default: D.rank,
        choices: [...RANK_BY],
        describe: 'label quality score that orders the issues',
      })
      .option('filter-by', {
        type: 'string',
        default: D.filterBy,
        choices: [...FILTERS],
        describe: 'which rows confident learning flags',
      })
      .option('knn-threshold', {
        type: 'number',
        default: D.knnThreshold,
        describe: 'flag a row when more than this share of its neighbours carry another label',
      })
      .option('entropy-threshold', {
        type: 'number',
        default: D.entropyThreshold,
        describe: 'normalised entropy at or above which a prediction is "unlike any class"',
      })
      .option('iqr-fence', {
        type: 'number',
        default: D.iqrFence,
        describe: 'distance outliers lie above Q3 + this × IQR of the mean neighbour distance',
      })
      .option('seed', { type: 'number', default: D.seed, describe: 'seed of the folds' })
      .option('out', {
        type: 'string',
        default: D.out!,
        describe: 'directory for report.html, audit.json and CSV lists (new, empty, or an earlier audit output)',
      })
      .option('data', {
        type: 'string',
        describe:
          'where the data set is now, if it moved since extract (thumbnails default to the data root extract recorded)',
      })
      .option('labels-out', {
        type: 'string',
        describe: 'write id,label with the suggested labels for you to review (never replaces a file you edited)',
      })
      .option('report-limit', { type: 'number', default: D.reportLimit, describe: 'issues shown per report section' })
      .option('top', { type: 'number', default: 20, describe: 'issues listed per section on the terminal' })
      .option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as Record<string, unknown>;
    const { audit, summary } = await import('../jobs/audit.js');
    const r = await audit({
      cache: a.cache as string,
      split: a.split as string,
      k: a.k as number,
      rank: a.rank as AuditOptions['rank'],
      filterBy: a['filter-by'] as AuditOptions['filterBy'],
      knnThreshold: a['knn-threshold'] as number,
      entropyThreshold: a['entropy-threshold'] as number,
      iqrFence: a['iqr-fence'] as number,
      seed: a.seed as number,
      out: a.out as string,
      data: (a.data as string | undefined) ?? null,
      labelsOut: (a['labels-out'] as string | undefined) ?? null,
      reportLimit: a['report-limit'] as number,
      log: logToStderr,
    });
    const { probabilities: _p, all: _a, ...json } = r;
    emit(a.json as boolean, json, () => human(r, a.top as number, summary));
  },
};
