/** Issue 27 item 12: failures still in the ledger keep exit 3 on re-runs, and are named in the summary. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { runCli, tempDir, writeImageFolder, writeTinyModel } from '../support/helpers.js';

describe('re-runs keep exit 3 while failures remain (issue 27, item 12)', () => {
  it('an unchanged failed image is still a failure: exit 3 and named on every re-run', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    const data = path.join(dir, 'data');
    await writeImageFolder(data, { train: { a: 2, b: 2 } });
    await fs.writeFile(path.join(data, 'train', 'a', 'broken.jpg'), 'not an image');
    const args = ['extract', '--data', data, '--model', model, '--cache', path.join(dir, 'cache'), '--device', 'cpu'];
    const first = await runCli(args);
    assert.equal(first.code, 3, first.stderr);
    const again = await runCli([...args, '--json']);
    assert.equal(again.code, 3, `the failure is still in the ledger: ${again.stderr}`);
    const r = JSON.parse(again.stdout);
    assert.equal(r.extracted, 0);
    assert.equal(r.ledgerFailed, 1);
    const human = await runCli(args);
    assert.equal(human.code, 3);
    assert.match(
      human.stderr + human.stdout,
      /1 failed in an earlier run and are still in the ledger \(--retry-failed/,
    );
  });
});
