/**
 * Issue 27 items 1–3: every reader verifies every part it reads (length and sha256, and agreement with its index),
 * and refuses damage with the remedy instead of reading different numbers with exit 0.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { runCli, tempDir } from '../support/helpers.js';
import { flipByte, writeSyntheticCache } from '../support/synthetic-cache.js';

const REMEDY = /re-run extract for this split/;
const FORMATS = ['libsvm', 'svmlight', 'npy', 'csv', 'parquet', 'arrow'] as const;

/**
 * An offset inside a part's feature values: the feature column is the last buffer of the record batch body, which
 * ends just before the Arrow footer (whose length sits 10 bytes from the end, before the `ARROW1` magic).
 */
async function featureOffset(file: string): Promise<number> {
  const bytes = await fs.readFile(file);
  const footerLength = bytes.readInt32LE(bytes.length - 10);
  return bytes.length - 10 - footerLength - 16;
}

async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await fs.readdir(dir)).sort())
    out[name] = (await fs.readFile(path.join(dir, name))).toString('base64');
  return out;
}

async function damagedCache(damage: (parts: string[]) => Promise<void>): Promise<{ dir: string; cache: string }> {
  const dir = await tempDir();
  const cache = path.join(dir, 'cache');
  await damage(await writeSyntheticCache(cache));
  return { dir, cache };
}

async function assertEveryReaderRefuses(
  dir: string,
  cache: string,
  problem: RegExp,
  formats: readonly string[] = ['csv', 'parquet'],
): Promise<void> {
  const check = await runCli(['info', '--cache', cache, '--check', '--json']);
  assert.equal(check.code, 1, `info --check: ${check.stdout}${check.stderr}`);
  const report = JSON.parse(check.stdout) as { healthy: boolean; splits: { damaged: { problem: string }[] }[] };
  assert.equal(report.healthy, false);
  assert.ok(
    report.splits.some((s) => s.damaged.some((d) => problem.test(d.problem))),
    `info --check names the problem: ${check.stdout}`,
  );
  for (const format of formats) {
    const out = path.join(dir, `out-${format}`);
    const r = await runCli(['export', '--cache', cache, '--format', format, '--out', out]);
    assert.equal(r.code, 1, `export ${format}: ${r.stderr}`);
    assert.match(r.stderr, REMEDY, `export ${format}`);
    assert.ok(!existsSync(out), `export ${format} leaves no output`);
  }
  const head = path.join(dir, 'head');
  const train = await runCli(['train-head', '--cache', cache, '--head', head, '--no-sweep', '--epochs', '2']);
  assert.equal(train.code, 1, `train-head: ${train.stderr}`);
  assert.match(train.stderr, REMEDY);
  const splitDir = path.join(cache, 'train');
  const before = await snapshot(splitDir);
  const compact = await runCli(['compact', '--cache', cache, '--split', 'train']);
  assert.equal(compact.code, 1, `compact: ${compact.stderr}`);
  assert.match(compact.stderr, REMEDY);
  assert.deepEqual(await snapshot(splitDir), before, 'compact changed nothing');
}

describe('damaged parts are refused by every reader (issue 27, items 1–3)', () => {
  it('a flipped byte in the live rows of a split with superseded rows: compact refuses and deletes nothing', async () => {
    const { dir, cache } = await damagedCache(async ([first]) => flipByte(first!, await featureOffset(first!)));
    await assertEveryReaderRefuses(dir, cache, /sha256 mismatch/, FORMATS);
  });

  it('a flipped byte in the Arrow footer is refused before decoding', async () => {
    const { dir, cache } = await damagedCache(async ([, second]) => {
      const size = (await fs.stat(second!)).size;
      await flipByte(second!, size - 24);
    });
    await assertEveryReaderRefuses(dir, cache, /sha256 mismatch/);
  });

  it('a part deleted while its index is kept: the split is damaged, not smaller', async () => {
    const { dir, cache } = await damagedCache(async ([, second]) => fs.rm(second!));
    const plain = await runCli(['info', '--cache', cache, '--json']);
    assert.equal(plain.code, 1, 'info without --check reports the missing part too');
    await assertEveryReaderRefuses(dir, cache, /^missing/);
  });

  it('an index whose row list was trimmed (still valid JSON) disagrees with its part', async () => {
    const { dir, cache } = await damagedCache(async ([first]) => {
      const indexFile = first!.replace(/\.arrow$/, '.index.json');
      const index = JSON.parse(await fs.readFile(indexFile, 'utf8')) as { rows: unknown[] };
      index.rows = index.rows.slice(0, 2);
      await fs.writeFile(indexFile, JSON.stringify(index));
    });
    await assertEveryReaderRefuses(dir, cache, /holds 9 rows, its index lists 2/);
  });

  it('a deleted index: the part cannot be verified, so it is damaged (a flipped byte does not pass)', async () => {
    const { dir, cache } = await damagedCache(async ([first]) => {
      await fs.rm(first!.replace(/\.arrow$/, '.index.json'));
      await flipByte(first!, await featureOffset(first!));
    });
    await assertEveryReaderRefuses(dir, cache, /index .* is missing or unreadable/);
  });

  it('an index without its sha256 field: damaged', async () => {
    const { dir, cache } = await damagedCache(async ([first]) => {
      const indexFile = first!.replace(/\.arrow$/, '.index.json');
      const index = JSON.parse(await fs.readFile(indexFile, 'utf8')) as { sha256?: string };
      delete index.sha256;
      await fs.writeFile(indexFile, JSON.stringify(index));
    });
    await assertEveryReaderRefuses(dir, cache, /records no length and sha256/);
  });

  it('the undamaged cache: every reader succeeds, and check passes', async () => {
    const dir = await tempDir();
    const cache = path.join(dir, 'cache');
    await writeSyntheticCache(cache);
    const check = await runCli(['info', '--cache', cache, '--check', '--json']);
    assert.equal(check.code, 0, check.stdout);
    const r = await runCli(['export', '--cache', cache, '--format', 'csv', '--out', path.join(dir, 'x.csv')]);
    assert.equal(r.code, 0, r.stderr);
    const compact = await runCli(['compact', '--cache', cache, '--split', 'train', '--json']);
    assert.equal(compact.code, 0, compact.stderr);
    assert.equal(JSON.parse(compact.stdout).compacted, true);
    const after = await runCli(['info', '--cache', cache, '--check', '--json']);
    assert.equal(after.code, 0, `a compacted split verifies: ${after.stdout}`);
  });
});
