/**
 * `.txt` image lists, read the same way by extract (`--data list.txt`) and predict (a list among its inputs): one
 * image path or http(s) URL per line, blank lines and `#` comment lines ignored.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

/** The list's entries, trimmed, without blank and comment lines. */
export async function readListLines(list: string): Promise<string[]> {
  return (await fs.readFile(list, 'utf8'))
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

/** Where a path line points: an absolute path as written, a relative one from the list's folder. */
export function listEntryPath(list: string, line: string): string {
  return path.isAbsolute(line) ? line : path.join(path.dirname(list), line);
}
