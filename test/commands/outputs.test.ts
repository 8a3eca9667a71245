/**
 * Issue 27 items 4–5: outputs are complete or absent (temporary + rename, every write checked), and featcache never
 * replaces a file it cannot prove it wrote.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { requireReportReplaceable, writeReport } from '../../src/export/report.js';
import type { HeadInfo } from '../../src/head/saved.js';
import { cliPath, runCli, tempDir } from '../support/helpers.js';
import { writeSyntheticCache } from '../support/synthetic-cache.js';

async function cacheIn(): Promise<{ dir: string; cache: string }> {
  const dir = await tempDir();
  const cache = path.join(dir, 'cache');
  await writeSyntheticCache(cache);
  return { dir, cache };
}

describe('outputs on a full disk (issue 27, item 4)', () => {
  it('parquet: a write cut short by the disk fails, and the good file already there is kept', async () => {
    const { dir, cache } = await cacheIn();
    const out = path.join(dir, 'x.parquet');
    const good = await runCli(['export', '--cache', cache, '--format', 'parquet', '--out', out]);
    assert.equal(good.code, 0, good.stderr);
    const before = await fs.readFile(out);
    assert.ok(before.length > 2048, `the test needs an export over the 1 KiB limit (${before.length} bytes)`);
    // A file size limit cuts writes short as a full disk does (SIGXFSZ ignored, so the write returns short/EFBIG).
    const args = ['export', '--cache', cache, '--format', 'parquet', '--out', out].map((a) => `'${a}'`).join(' ');
    const full = spawnSync(
      'bash',
      ['-c', `trap '' XFSZ; ulimit -f 1; exec '${process.execPath}' '${cliPath}' ${args}`],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(full.status, 1, `exit 1 on a full disk: ${full.stderr}`);
    assert.match(full.stderr, /--out .*x\.parquet: cannot write/);
    assert.deepEqual(await fs.readFile(out), before, 'the earlier export is intact');
    assert.deepEqual(
      (await fs.readdir(dir)).filter((n) => n.endsWith('.tmp')),
      [],
      'no temporary is left behind',
    );
  });
});

describe("files that are not featcache's are never replaced (issue 27, item 5)", () => {
  it("export --out user.csv refuses to replace a user's user.csv.classes.txt; replaces its own", async () => {
    const { dir, cache } = await cacheIn();
    const out = path.join(dir, 'user.csv');
    for (const side of ['classes.txt', 'provenance.json']) {
      const file = `${out}.${side}`;
      await fs.writeFile(file, 'my notes\n');
      const r = await runCli(['export', '--cache', cache, '--format', 'csv', '--out', out]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `--out: .*user\\.csv\\.${side.replace('.', '\\.')} exists and featcache cannot prove it wrote it; move it away`,
        ),
      );
      assert.equal(await fs.readFile(file, 'utf8'), 'my notes\n', `${side} is untouched`);
      await assert.rejects(fs.stat(out), 'nothing was written');
      await fs.rm(file);
    }
    assert.equal((await runCli(['export', '--cache', cache, '--format', 'csv', '--out', out])).code, 0);
    const again = await runCli(['export', '--cache', cache, '--format', 'csv', '--out', out]);
    assert.equal(again.code, 0, `featcache's own side files are replaced: ${again.stderr}`);
    await fs.appendFile(`${out}.classes.txt`, 'edited by the user\n');
    const edited = await runCli(['export', '--cache', cache, '--format', 'csv', '--out', out]);
    assert.equal(edited.code, 2, 'a side file changed since featcache wrote it is no longer provably featcache’s');
  });

  it("npy: --normalize standard does not overwrite a user's stats.json in an export folder", async () => {
    const { dir, cache } = await cacheIn();
    const out = path.join(dir, 'npy');
    assert.equal((await runCli(['export', '--cache', cache, '--format', 'npy', '--out', out])).code, 0);
    await fs.writeFile(path.join(out, 'stats.json'), '{"mine":true}');
    const r = await runCli(['export', '--cache', cache, '--format', 'npy', '--out', out, '--normalize', 'standard']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /stats\.json exists and featcache cannot prove it wrote it/);
    assert.equal(await fs.readFile(path.join(out, 'stats.json'), 'utf8'), '{"mine":true}');
  });

  it("predict --report refuses a user's file before doing any work", async () => {
    const dir = await tempDir();
    const mine = path.join(dir, 'mine.html');
    await fs.writeFile(mine, '<p>my page</p>');
    const r = await runCli(['predict', '--head', path.join(dir, 'no-head'), '--report', mine, path.join(dir, 'a.jpg')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--report: .*mine\.html exists and featcache cannot prove it wrote it/);
    assert.equal(await fs.readFile(mine, 'utf8'), '<p>my page</p>');
  });

  it('a report featcache wrote earlier may be replaced', async () => {
    const report = path.join(await tempDir(), 'r.html');
    const info = {
      classes: ['a'],
      provenance: { modelFile: 'm.onnx', modelSha256: 'f'.repeat(64), tappedTensor: 't', preset: { name: 'p' } },
    } as unknown as HeadInfo;
    await writeReport(report, [], info, 10);
    await requireReportReplaceable(report);
  });
});
