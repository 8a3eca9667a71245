import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { indexFileOf } from '../../src/store/part.js';
import { missingParts, readVerifiedPart, verifyPart } from '../../src/store/verify.js';
import { tempDir } from '../support/helpers.js';
import { flipByte, writeSyntheticCache } from '../support/synthetic-cache.js';

describe('verifyPart: a part and its index must agree', () => {
  it('an intact part reads; each kind of disagreement is named', async () => {
    const cache = path.join(await tempDir(), 'cache');
    const [first] = await writeSyntheticCache(cache);
    const intact = await readVerifiedPart(first!);
    assert.equal(intact.rows.length, 9);

    const index = JSON.parse(await fs.readFile(indexFileOf(first!), 'utf8')) as Record<string, unknown> & {
      rows: { mtimeMs: number }[];
      failures: unknown[];
    };
    const cases: [string, (i: typeof index) => void, RegExp][] = [
      ['row stamp edited', (i) => (i.rows[4]!.mtimeMs += 1), /row 4 .* differs from its index/],
      [
        'failure added',
        (i) => i.failures.push({ path: 'x', stage: 'read', message: 'm', size: 1, mtimeMs: 1 }),
        /failure records differ/,
      ],
      ['length changed', (i) => (i.bytes = (i.bytes as number) + 1), /^grown|^truncated/],
      ['sha256 removed', (i) => delete i.sha256, /records no length and sha256/],
    ];
    for (const [what, edit, problem] of cases) {
      const copy = structuredClone(index);
      edit(copy);
      await fs.writeFile(indexFileOf(first!), JSON.stringify(copy));
      assert.match((await verifyPart(first!)).problem ?? 'no problem', problem, what);
    }
    await fs.writeFile(indexFileOf(first!), JSON.stringify(index));
    await flipByte(first!, 100);
    await assert.rejects(readVerifiedPart(first!), /damaged part file .*sha256 mismatch.*; re-run extract/);
  });

  it('an index without its part is damage, unless the part waits under a temporary name (interrupted commit)', async () => {
    const cache = path.join(await tempDir(), 'cache');
    const [, second] = await writeSyntheticCache(cache);
    const dir = path.dirname(second!);
    const pending = path.join(dir, `.${path.basename(second!)}.999999.1.tmp`);
    await fs.rename(second!, pending);
    assert.deepEqual(await missingParts(dir), [], 'an interrupted commit is not damage');
    await fs.rm(pending);
    assert.deepEqual(await missingParts(dir), [second]);
  });
});
