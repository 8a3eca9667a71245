/** README's fenced code blocks, read from README.md itself so a test and the README cannot drift apart. */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { repoRoot } from './helpers.js';
import type { PythonEnv } from './python-venv.js';

export interface ReadmeBlock {
  lang: string;
  code: string;
  /** 1-based line of the opening fence, for messages. */
  line: number;
}

export function readmeBlocks(lang: string): ReadmeBlock[] {
  const lines = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8').split('\n');
  const blocks: ReadmeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    if (open[1] === lang) blocks.push({ lang, code: `${body.join('\n')}\n`, line: start + 1 });
  }
  return blocks;
}

/** The one README block of `lang` that `pick` recognises (by its first comment, say); throws unless exactly one. */
export function readmeBlock(lang: string, pick: (code: string) => boolean, what: string): ReadmeBlock {
  const found = readmeBlocks(lang).filter((b) => pick(b.code));
  if (found.length !== 1)
    throw new Error(`README.md: expected one \`\`\`${lang} block for ${what}, found ${found.length}`);
  return found[0]!;
}

/** Python blocks the tests run, by the first line that names each: a README block none of them names fails a test. */
export const README_PYTHON = Object.freeze({
  pandasParquet: (code: string) => code.startsWith('# pandas / pyarrow\n'),
  polarsParquet: (code: string) => code.startsWith('# polars\n'),
  arrowIpc: (code: string) => code.startsWith('# Arrow IPC'),
  compactedParts: (code: string) => code.startsWith('# after `featcache compact`'),
  onnxruntime: (code: string) => code.includes('import onnxruntime as ort'),
});

/**
 * Runs a README Python block verbatim in `cwd` with the venv's interpreter and returns the values of `expressions`
 * evaluated in the namespace it leaves (via test/support/python/run_snippet.py).
 */
export async function runPythonBlock(
  py: PythonEnv,
  block: ReadmeBlock,
  cwd: string,
  expressions: Record<string, string>,
): Promise<Record<string, unknown>> {
  return JSON.parse(await spawnBlock(py, block, cwd, expressions, [])) as Record<string, unknown>;
}

/** Runs a README Python block once per input, `name` (e.g. photo.jpg) linked to that input each time. */
export async function runPythonBlockEach(
  py: PythonEnv,
  block: ReadmeBlock,
  cwd: string,
  expressions: Record<string, string>,
  name: string,
  inputs: string[],
): Promise<Record<string, unknown>[]> {
  const list = path.join(cwd, `.readme-line-${block.line}.inputs.json`);
  await fsp.writeFile(list, JSON.stringify(inputs));
  return JSON.parse(await spawnBlock(py, block, cwd, expressions, [name, list])) as Record<string, unknown>[];
}

async function spawnBlock(
  py: PythonEnv,
  block: ReadmeBlock,
  cwd: string,
  expressions: Record<string, string>,
  extra: string[],
): Promise<string> {
  const snippet = path.join(cwd, `.readme-line-${block.line}.py`);
  const exprFile = path.join(cwd, `.readme-line-${block.line}.json`);
  await fsp.writeFile(snippet, block.code);
  await fsp.writeFile(exprFile, JSON.stringify(expressions));
  const script = path.join(repoRoot, 'test/support/python/run_snippet.py');
  return py.run([script, snippet, exprFile, ...extra], { cwd });
}
