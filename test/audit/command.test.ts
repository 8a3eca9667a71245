/** `featcache audit` end to end on a small colour set with one planted mislabel: outputs, escaping, safety. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { parse } from 'csv-parse/sync';
import { FeatureCache, type FeatureSet } from '../../src/store/reader.js';
import { csvTextValue } from '../../src/util/csv.js';
import { runCli, tempDir, writeColourFolder, writeTinyModel } from '../support/helpers.js';

const RED = 'red<i>&"';
/** A file name with a comma and a quote (csvText quotes it). */
const FORMULA = '=1+1,"x".png';
/** A class name a spreadsheet would read as a formula (labels -1/1 are common): csvText writes it as '-1. */
const MINUS = '-1';

async function cacheHash(dir: string): Promise<string> {
  const hash = createHash('sha256');
  for (const entry of (await fs.readdir(dir, { recursive: true })).sort()) {
    const file = path.join(dir, entry);
    if ((await fs.stat(file)).isFile()) hash.update(entry).update(await fs.readFile(file));
  }
  return hash.digest('hex');
}

describe('featcache audit', () => {
  let dir: string;
  let data: string;
  let cache: string;
  let model: string;
  const planted = `train/${RED}/blue-in-red.png`;
  before(async () => {
    dir = await tempDir('featcache-audit-cli-');
    data = path.join(dir, 'data');
    await writeColourFolder(data, 20);
    await fs.rename(path.join(data, 'train/red'), path.join(data, 'train', RED));
    await fs.rename(path.join(data, 'train/blue/blue0.png'), path.join(data, planted));
    await fs.rename(path.join(data, 'train/blue/blue1.png'), path.join(data, 'train/blue', FORMULA));
    await fs.rename(path.join(data, 'train/green'), path.join(data, 'train', MINUS));
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    cache = path.join(dir, 'features');
    const r = await runCli([
      'extract',
      '--data',
      data,
      '--split',
      'train',
      '--model',
      model,
      '--cache',
      cache,
      '--device',
      'cpu',
    ]);
    assert.equal(r.code, 0, r.stderr);
  });

  it('flags the planted mislabel first, suggests its class, writes escaped HTML, CSV lists and an id,label file', async () => {
    const before = await cacheHash(cache);
    const out = path.join(dir, 'audit');
    const labels = path.join(dir, 'suggested.csv');
    const r = await runCli(['audit', '--cache', cache, '--out', out, '--data', data, '--labels-out', labels, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.rows, 60);
    assert.equal(result.labelIssues[0].path, planted);
    assert.equal(result.labelIssues[0].given, RED);
    assert.equal(result.labelIssues[0].suggested, 'blue');
    assert.equal(result.labelIssues[0].confidentLearning, true);
    assert.equal(result.labelIssues[0].knnFlag, true);
    for (const f of ['report.html', 'audit.json', 'label-issues.csv', 'outliers.csv', 'scores.csv', 'noise-matrix.csv'])
      await fs.access(path.join(out, f));
    const html = await fs.readFile(path.join(out, 'report.html'), 'utf8');
    assert.ok(!html.includes(RED), 'the raw class name never reaches the page');
    assert.ok(html.includes('red&lt;i&gt;&amp;&quot;'));
    assert.match(html, /data:image\/jpeg;base64,/);
    const audit = JSON.parse(await fs.readFile(path.join(out, 'audit.json'), 'utf8'));
    assert.match(audit.provenance.modelSha256, /^[0-9a-f]{64}$/);
    const rows = parse<{ id: string; label: string }>(await fs.readFile(labels, 'utf8'), { columns: true });
    assert.equal(rows.length, 60);
    const changed = rows.filter((row) => csvTextValue(row.label) !== path.basename(path.dirname(row.id)));
    assert.deepEqual(changed, [{ id: planted, label: 'blue' }]);
    assert.equal(await cacheHash(cache), before, 'the cache is untouched');
    // The same command again replaces only what it wrote.
    const again = await runCli(['audit', '--cache', cache, '--out', out, '--labels-out', labels, '--json']);
    assert.equal(again.code, 0, again.stderr);
  });

  it('never replaces a labels file the user edited, nor writes into a folder of theirs', async () => {
    const out = path.join(dir, 'audit2');
    const labels = path.join(dir, 'mine.csv');
    assert.equal((await runCli(['audit', '--cache', cache, '--out', out, '--labels-out', labels])).code, 0);
    await fs.appendFile(labels, 'reviewed,by hand\n');
    const edited = await fs.readFile(labels, 'utf8');
    const r = await runCli(['audit', '--cache', cache, '--out', out, '--labels-out', labels]);
    assert.equal(r.code, 2);
    assert.match(r.stderr.trim(), /^featcache: --labels-out: expected .*edited after featcache wrote it/m);
    assert.equal(await fs.readFile(labels, 'utf8'), edited);
    const theirs = path.join(dir, 'theirs');
    await fs.mkdir(theirs);
    await fs.writeFile(path.join(theirs, 'notes.txt'), 'mine');
    const r2 = await runCli(['audit', '--cache', cache, '--out', theirs]);
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /--out: expected a new or empty directory/);
    assert.deepEqual(await fs.readdir(theirs), ['notes.txt']);
    const user = path.join(dir, 'user.csv');
    await fs.writeFile(user, 'id,label\n');
    const r3 = await runCli(['audit', '--cache', cache, '--out', path.join(dir, 'audit3'), '--labels-out', user]);
    assert.equal(r3.code, 2);
    assert.match(r3.stderr, /not written by featcache/);
    await assert.rejects(fs.access(path.join(dir, 'audit3')), 'nothing written when refused');
  });

  it('thumbnails without --data, from the data root extract recorded; --data overrides it for moved data', async () => {
    const thumbs = (html: string) => html.match(/src="data:image\/jpeg;base64,/g)?.length ?? 0;
    const figures = (html: string) => html.match(/<figure/g)?.length ?? 0;
    const run = async (name: string, ...extra: string[]) => {
      const out = path.join(dir, name);
      const r = await runCli(['audit', '--cache', cache, '--out', out, '--json', ...extra]);
      assert.equal(r.code, 0, r.stderr);
      return { result: JSON.parse(r.stdout), html: await fs.readFile(path.join(out, 'report.html'), 'utf8') };
    };
    const plain = await run('audit-thumbs');
    assert.equal(plain.result.labelIssues[0].path, planted);
    assert.equal(plain.result.labelIssues[0].file, path.resolve(data, planted));
    assert.ok(figures(plain.html) > 0);
    assert.equal(thumbs(plain.html), figures(plain.html), 'every issue shown has its thumbnail');
    const moved = path.join(dir, 'moved');
    await fs.rename(data, moved);
    try {
      const stale = await run('audit-stale');
      assert.equal(thumbs(stale.html), 0);
      assert.match(stale.html, /no thumbnail: cannot read/);
      const override = await run('audit-moved', '--data', moved);
      assert.equal(override.result.labelIssues[0].file, path.join(moved, planted));
      assert.equal(thumbs(override.html), figures(override.html));
    } finally {
      await fs.rename(moved, data);
    }
  });

  it('--labels-out round-trips: ids are the cached paths, and extract --labels with it relabels exactly the flagged row', async () => {
    const labels = path.join(dir, 'roundtrip.csv');
    const r = await runCli(['audit', '--cache', cache, '--out', path.join(dir, 'audit-rt'), '--labels-out', labels]);
    assert.equal(r.code, 0, r.stderr);
    const text = await fs.readFile(labels, 'utf8');
    // Quoted (comma, quote); a cell starting with - guarded against spreadsheet formulas, as in every featcache CSV.
    assert.ok(text.includes(`"train/blue/${FORMULA.replace(/"/g, '""')}",blue\n`), text);
    assert.match(text, new RegExp(`\ntrain/${MINUS}/[^,]+,'${MINUS}\n`));
    const rows = parse<{ id: string; label: string }>(text, { columns: true });
    const old = await (await FeatureCache.open(cache)).read('train');
    assert.deepEqual(rows.map((row) => row.id).sort(), [...old.paths].sort(), 'ids are exactly the cached paths');
    const reviewed = path.join(dir, 'features-reviewed');
    const e = await runCli([
      'extract',
      '--data',
      data,
      '--split',
      'train',
      '--labels',
      labels,
      '--model',
      model,
      '--cache',
      reviewed,
      '--device',
      'cpu',
    ]);
    assert.equal(e.code, 0, e.stderr);
    const fresh = await (await FeatureCache.open(reviewed)).read('train');
    assert.deepEqual([...fresh.paths].sort(), [...old.paths].sort(), 'the same rows, under the same cached paths');
    const label = (set: FeatureSet, p: string) => set.classes[set.labels[set.paths.indexOf(p)]!];
    const changed = old.paths.filter((p) => label(fresh, p) !== label(old, p));
    assert.deepEqual(changed, [planted]);
    assert.equal(label(fresh, planted), 'blue');
    assert.equal(label(fresh, `train/blue/${FORMULA}`), 'blue');
    assert.ok(fresh.classes.includes(MINUS) && !fresh.classes.includes(`'${MINUS}`), fresh.classes.join(' '));
  });

  it('refuses bad flags with the flag named', async () => {
    for (const [flag, value, message] of [
      ['--k', '0', /--k: expected a positive integer/],
      ['--knn-threshold', '2', /--knn-threshold: expected/],
      ['--split', 'nope', /--split nope: no such split/],
    ] as const) {
      const r = await runCli(['audit', '--cache', cache, '--out', path.join(dir, 'bad'), flag, value]);
      assert.equal(r.code, 2, `${flag} ${value}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    await assert.rejects(fs.access(path.join(dir, 'bad')));
  });
});
