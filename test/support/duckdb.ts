/**
 * Independent readers for exports and cache part files: DuckDB (its own Parquet reader) and, for Arrow IPC, which
 * DuckDB reads only through its `arrow` extension (not installable offline), a small python3 + numpy reader.
 * Neither goes through apache-arrow JS, which featcache itself uses.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { repoRoot } from './helpers.js';

export interface RefRow {
  path: string;
  label: number | null;
  labelName: string | null;
  feature: number[];
}

export interface Duck {
  query(sql: string): Promise<Record<string, unknown>[]>;
  close(): void;
}

export async function openDuck(): Promise<Duck> {
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  return {
    query: async (sql) => (await connection.runAndReadAll(sql)).getRowObjectsJson(),
    close: () => {
      connection.closeSync();
      instance.closeSync();
    },
  };
}

export const sqlString = (text: string) => `'${text.replace(/'/g, "''")}'`;

const python = '/usr/bin/python3';
const ipcReader = path.join(repoRoot, 'test/support/read_arrow_ipc.py');

/** Why Arrow IPC cannot be read independently here, or false: the reader needs /usr/bin/python3 with numpy. */
export const needsIpcReader: string | false = (() => {
  try {
    execFileSync(python, ['-c', 'import numpy'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'needs /usr/bin/python3 with numpy (apt-get install python3-numpy) to read Arrow IPC without apache-arrow JS';
  }
})();

export interface IpcFile {
  metadata: Record<string, string>;
  rows: RefRow[];
}

/** Arrow IPC files read by test/support/read_arrow_ipc.py (python3 + numpy, flatbuffers decoded by hand). */
export function readArrowIpc(files: string[]): IpcFile[] {
  const out = execFileSync(python, [ipcReader, ...files], { maxBuffer: 1 << 28 }).toString();
  return (JSON.parse(out) as { metadata: Record<string, string>; rows: Record<string, unknown>[] }[]).map((f) => ({
    metadata: f.metadata,
    rows: f.rows.map((r) => ({
      path: r.path as string,
      label: r.label as number | null,
      labelName: r.label_name as string | null,
      feature: r.feature as number[],
    })),
  }));
}

/** Rows of a Parquet file in file order, as DuckDB reads them. */
export async function readParquetRows(duck: Duck, file: string): Promise<RefRow[]> {
  const rows = await duck.query(
    `select path, label, label_name, feature from read_parquet(${sqlString(file)}, file_row_number = true) order by file_row_number`,
  );
  return rows.map((r) => ({
    path: r.path as string,
    label: r.label as number | null,
    labelName: r.label_name as string | null,
    feature: r.feature as number[],
  }));
}

/**
 * The split as featcache's reader should see it, computed independently: every part file's rows through the Python
 * IPC reader, the removals and failures from the parts' index files, and "newest record wins" applied in commit
 * (file name) order. Rows come in commit order, as export writes them.
 */
export async function referenceRows(cacheDir: string, split: string): Promise<RefRow[]> {
  const dir = path.join(cacheDir, split);
  const parts = (await fs.readdir(dir)).filter((n) => /^part-.*\.arrow$/.test(n)).sort();
  const contents = readArrowIpc(parts.map((n) => path.join(dir, n)));
  const latest = new Map<string, { kind: 'row'; part: number; row: RefRow } | { kind: 'gone' }>();
  for (const [k, name] of parts.entries()) {
    const index = JSON.parse(await fs.readFile(path.join(dir, name.replace(/\.arrow$/, '.index.json')), 'utf8')) as {
      failures: { path: string }[];
      removed: string[];
    };
    for (const p of index.removed) latest.set(p, { kind: 'gone' });
    for (const f of index.failures) latest.set(f.path, { kind: 'gone' });
    for (const row of contents[k]!.rows) {
      latest.delete(row.path);
      latest.set(row.path, { kind: 'row', part: k, row });
    }
  }
  const live = [...latest.values()].flatMap((r) => (r.kind === 'row' ? [r] : []));
  // Commit order: by part, then by position in the part (Map insertion order within a part).
  return live.sort((a, b) => a.part - b.part).map((r) => r.row);
}
