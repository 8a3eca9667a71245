import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { duplicates } from '../../src/jobs/duplicates.js';
import { extract } from '../../src/jobs/extract.js';
import { mobilenetModel, runCli, tempDir } from '../support/helpers.js';
import { monkeys, monkeysCache, needsMonkeys } from '../support/neighbors.js';
import { pictureSimilarity, plantedDataset, samePicture, tiny } from '../support/plant.js';

const sha256 = async (file: string) =>
  createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex');

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

describe('duplicates on real images (monkeys, MobileNetV2-int8)', { skip: needsMonkeys }, () => {
  it('finds every one of the byte-identical copies in training and validation, as groups; --out lists one per copy', async () => {
    const cache = await monkeysCache(['training', 'validation']);
    // Independent reference: group the files by the sha256 of their bytes.
    const byHash = new Map<string, string[]>();
    for (const split of ['training', 'validation'])
      for (const file of await filesUnder(path.join(monkeys, split))) {
        const h = await sha256(file);
        byHash.set(h, [...(byHash.get(h) ?? []), path.relative(monkeys, file)]);
      }
    const copies = [...byHash.values()].filter((g) => g.length > 1);
    const extraIn = (split: string) =>
      copies.filter((g) => g[0]!.startsWith(`${split}/`)).reduce((n, g) => n + g.length - 1, 0);
    // What README says of the data: 68 files are copies of another (1,369 files, 1,301 distinct), 64 of them in
    // training (63 groups: 62 pairs and a triple) and 4 in validation (4 pairs), none across the two splits.
    assert.equal(
      copies.reduce((n, g) => n + g.length - 1, 0),
      68,
    );
    assert.deepEqual([extraIn('training'), extraIn('validation'), copies.length], [64, 4, 67]);
    assert.ok(
      copies.every((g) => new Set(g.map((f) => f.split('/')[0])).size === 1),
      'no byte copy spans splits',
    );
    const out = path.join(path.dirname(cache), 'extras.txt');
    const result = await duplicates({ cache, out });
    for (const files of copies) {
      const group = result.groups.find((g) => g.members.some((m) => m.path === files[0]));
      assert.ok(group, `${files[0]} is in a group`);
      for (const f of files)
        assert.ok(
          group.members.some((m) => m.path === f),
          `${f} grouped with ${files[0]}`,
        );
    }
    const extras = (await fs.readFile(out, 'utf8')).trim().split('\n');
    // Each exact group leaves exactly one member off the list; the rest are real files under the data root.
    for (const files of copies) {
      const listed = files.filter((f) => extras.includes(path.join(monkeys, f)));
      assert.ok(listed.length >= files.length - 1, `${files.join(', ')}: ${listed.length} listed`);
    }
    for (const group of result.groups)
      assert.ok(!extras.includes(group.members[0]!.file!), 'the kept one is not listed');
    await fs.rm(path.dirname(cache), { recursive: true, force: true });
  });

  it('planted edited copies of val in train: recall ≥ 0.95 at precision ≥ 0.95, leaks listed first', async () => {
    const dir = await tempDir();
    const data = path.join(dir, 'data');
    const planted = await plantedDataset(monkeys, data, { perClassTrain: 40, perClassVal: 15, plantPerClass: 10 });
    const cache = path.join(dir, 'features');
    for (const split of ['training', 'validation'])
      await extract({ data, split, model: mobilenetModel, tap: 'avgpool', cache, device: 'cpu' });
    const result = await duplicates({ cache });
    const copyOf = new Map(planted.map((p) => [p.copy, p.source]));
    let flagged = 0;
    let right = 0;
    let found = 0;
    for (const g of result.groups) {
      const val = g.members.filter((m) => m.split === 'validation').map((m) => m.path);
      if (val.length === 0) continue;
      for (const t of g.members.filter((m) => m.split === 'training')) {
        flagged++;
        if (val.includes(copyOf.get(t.path) ?? '')) {
          found++;
          right++;
        } else {
          // monkeys has train/val copies of its own; a pixel comparison, not the embedding, says whether it is one.
          let same = false;
          for (const v of val) same ||= await samePicture(path.join(data, t.path), path.join(data, v));
          if (same) right++;
        }
      }
    }
    const recall = found / planted.length;
    const precision = right / flagged;
    assert.ok(recall >= 0.95, `recall ${recall} (${found} of ${planted.length})`);
    assert.ok(precision >= 0.95, `precision ${precision} (${right} of ${flagged})`);
    const firstNonLeak = result.groups.findIndex((g) => !g.leak);
    assert.ok(firstNonLeak === -1 || result.groups.slice(firstNonLeak).every((g) => !g.leak), 'leaks first');
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('no false group among 100 distinct images of one class (distinct by bytes and by pixels)', async () => {
    const dir = await tempDir();
    // The set has near copies of its own (re-framed crops, burst shots): pick 100 that pixels say are distinct.
    let chosen: { file: string; thumbs: Float64Array[]; hash: string }[] = [];
    for (const c of ['n1', 'n3', 'n5', 'n7']) {
      chosen = [];
      for (const file of (await filesUnder(path.join(monkeys, 'training', c))).sort()) {
        if (chosen.length === 100) break;
        const [thumbs, hash] = [await tiny(file), await sha256(file)];
        if (chosen.some((x) => x.hash === hash || pictureSimilarity(x.thumbs, thumbs) >= 0.6)) continue;
        chosen.push({ file, thumbs, hash });
      }
      if (chosen.length === 100) break;
    }
    assert.equal(chosen.length, 100);
    const data = path.join(dir, 'data', 'train', 'one-class');
    await fs.mkdir(data, { recursive: true });
    for (const c of chosen) await fs.copyFile(c.file, path.join(data, path.basename(c.file)));
    const cache = path.join(dir, 'features');
    await extract({
      data: path.join(dir, 'data'),
      split: 'train',
      model: mobilenetModel,
      tap: 'avgpool',
      cache,
      device: 'cpu',
    });
    const result = await duplicates({ cache });
    assert.deepEqual(
      result.groups.map((g) => g.members.map((m) => `${m.path} ${m.similarity.toFixed(3)}`)),
      [],
    );
    // The command line: exit 0, JSON on stdout, CSV and report written.
    const csv = path.join(dir, 'groups.csv');
    const report = path.join(dir, 'dups.html');
    const run = await runCli(['duplicates', '--cache', cache, '--json', '--csv', csv, '--report', report]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).groups.length, 0);
    assert.equal(await fs.readFile(csv, 'utf8'), 'group,kind,leak,split,path,label,similarity,keep\n');
    assert.match(await fs.readFile(report, 'utf8'), /0 groups over 100 images/);
    await fs.rm(dir, { recursive: true, force: true });
  });
});
