/**
 * An audit's output directory read back for the map: which split and features it audited (audit.json) and every
 * row's label quality and flags (scores.csv, which lists all rows; audit.json keeps only the flagged ones).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parse } from 'csv-parse/sync';
import { damagedFile, missingFile } from '../errors.js';
import { csvTextValue } from '../util/csv.js';

export interface AuditScores {
  dir: string;
  split: string;
  modelSha256: string | null;
  /** Per cached path of the audited split. */
  rows: Map<string, { score: number; flags: string[] }>;
}

/** RFC 4180 rows of a CSV featcache wrote, each cell with csvText's formula guard taken off. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = parse(text, { bom: true });
  return rows.map((row) => row.map(csvTextValue));
}

const FLAG_COLUMNS: [string, string][] = [
  ['confident_learning', 'label issue (confident learning)'],
  ['knn_flag', 'neighbours disagree'],
  ['distance_outlier', 'outlier (far from all)'],
  ['flat', 'unlike any class'],
];

const remedy = (dir: string) => `point --audit at a directory written by 'featcache audit --out ${dir}'`;

export async function readAuditScores(dir: string): Promise<AuditScores> {
  const jsonFile = path.join(dir, 'audit.json');
  const text = await fs.readFile(jsonFile, 'utf8').catch(() => {
    throw missingFile('audit', jsonFile, remedy(dir));
  });
  let json: { provenance?: { split?: unknown; modelSha256?: unknown } };
  try {
    json = JSON.parse(text) as typeof json;
  } catch {
    throw damagedFile(jsonFile, 'is not valid JSON', `rerun 'featcache audit --out ${dir}'`);
  }
  const split = json.provenance?.split;
  if (typeof split !== 'string')
    throw damagedFile(jsonFile, 'names no audited split', `rerun 'featcache audit --out ${dir}'`);
  const csvFile = path.join(dir, 'scores.csv');
  const csv = await fs.readFile(csvFile, 'utf8').catch(() => {
    throw missingFile('audit', csvFile, remedy(dir));
  });
  let table: string[][];
  try {
    table = parseCsv(csv);
  } catch (error) {
    throw damagedFile(
      csvFile,
      `is not valid CSV (${(error as Error).message})`,
      `rerun 'featcache audit --out ${dir}'`,
    );
  }
  const [header, ...lines] = table;
  const column = (name: string) => header?.indexOf(name) ?? -1;
  const pathColumn = column('path');
  const qualityColumn = column('label_quality');
  if (pathColumn < 0 || qualityColumn < 0)
    throw damagedFile(csvFile, 'has no path and label_quality columns', `rerun 'featcache audit --out ${dir}'`);
  const flagColumns = FLAG_COLUMNS.map(([name, flag]) => [column(name), flag] as const).filter(([c]) => c >= 0);
  const rows = new Map<string, { score: number; flags: string[] }>();
  for (const cells of lines) {
    const p = cells[pathColumn];
    if (p === undefined || p === '') continue;
    const quality = cells[qualityColumn] ?? '';
    rows.set(p, {
      score: quality === '' ? NaN : Number(quality),
      flags: flagColumns.filter(([c]) => cells[c] === 'true').map(([, flag]) => flag),
    });
  }
  return {
    dir,
    split,
    modelSha256: typeof json.provenance?.modelSha256 === 'string' ? json.provenance.modelSha256 : null,
    rows,
  };
}
