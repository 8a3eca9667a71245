import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { audit } from '../../src/jobs/audit.js';
import { auditOf, headPredictions } from '../../src/jobs/map.js';
import { trainHead } from '../../src/jobs/train-head.js';
import { loadSplit } from '../../src/neighbors/split.js';
import { FeatureCache } from '../../src/store/reader.js';
import { plainProbabilities } from '../support/head-reference.js';
import { runCli, tempDir } from '../support/helpers.js';
import { ensureManifest } from '../../src/store/manifest.js';
import { writePart } from '../../src/store/part.js';
import { clusteredRows, syntheticCache, syntheticManifest, writeSyntheticPart } from '../support/synthetic-rows.js';

const names = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(4, '0')}.jpg`);
const DIM = 16;

/** train (240 rows) and val (60 rows) around the same 6 centres. */
async function cacheWithTwoSplits(): Promise<string> {
  const dir = await tempDir('featcache-map-cli-');
  const cache = path.join(dir, 'features');
  await syntheticCache(cache, DIM);
  await writeSyntheticPart(cache, 'train', 'part-001.arrow', names('t', 240), clusteredRows(240, DIM, 6, 1), {
    dim: DIM,
  });
  await writeSyntheticPart(cache, 'val', 'part-001.arrow', names('v', 60), clusteredRows(60, DIM, 6, 2), { dim: DIM });
  return cache;
}

interface MapJson {
  page: string;
  points: number;
  splits: string[];
  color: string;
  layout: {
    cached: boolean;
    provenance: { count: number; umap: { seed: number; epochs: number }; graph: { k: number } };
  };
  pageResult: { written: string[] };
}

describe('featcache map', () => {
  let cache: string;
  let dir: string;
  before(async () => {
    cache = await cacheWithTwoSplits();
    dir = path.dirname(cache);
  });

  it('lays out several splits (comma or repeated --split, spaces around names ignored), reports --json, and reuses the layout on the next run', async () => {
    const out = path.join(dir, 'both.html');
    const first = await runCli(
      ['map', '--cache', cache, '--split', 'train,val', '--out', out, '--epochs', '50', '--no-thumbnails', '--json'],
      { cwd: dir },
    );
    assert.equal(first.code, 0, first.stderr);
    const a = JSON.parse(first.stdout) as MapJson;
    assert.equal(a.points, 300);
    assert.deepEqual(a.splits, ['train', 'val']);
    assert.equal(a.color, 'label');
    assert.equal(a.layout.cached, false);
    assert.equal(a.layout.provenance.umap.epochs, 50);
    assert.equal(a.layout.provenance.graph.k, 15);
    assert.ok((await fs.stat(out)).size > 0);
    const second = await runCli(
      [
        'map',
        '--cache',
        cache,
        '--split',
        'train',
        '--split',
        ' val',
        '--out',
        out,
        '--epochs',
        '50',
        '--no-thumbnails',
        '--json',
      ],
      { cwd: dir },
    );
    assert.equal(second.code, 0, second.stderr);
    const b = JSON.parse(second.stdout) as MapJson;
    assert.equal(b.layout.cached, true);
    assert.equal(b.points, 300);
    const human = await runCli(
      ['map', '--cache', cache, '--out', out, '--epochs', '50', '--seed', '3', '--no-thumbnails'],
      { cwd: dir },
    );
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /240 images of train, coloured by label/);
    assert.match(human.stdout, /computed in .* seed 3/);
    assert.match(human.stdout, /^thumbnails: none \(--no-thumbnails\)$/m, 'not "240 missing" when none were asked');
  });

  const refusals: [string, string[], RegExp][] = [
    ['--color audit without --audit', ['--color', 'audit'], /--color audit: needs an audit's scores; pass --audit DIR/],
    [
      '--color prediction without a head',
      ['--color', 'prediction'],
      /--color prediction: needs a head; pass --head DIR/,
    ],
    [
      'an unknown colour',
      ['--color', 'rainbow'],
      /--color: expected one of "label", "prediction", "audit", got "rainbow"/,
    ],
    ['k = 0', ['--k', '0'], /--k: expected a positive integer, got 0/],
    ['min-dist out of range', ['--min-dist', '2'], /--min-dist: expected a number in \[0, 1\], got 2/],
    ['a split not in the cache', ['--split', 'test'], /--split test: not in cache/],
    ['a split named twice', ['--split', 'train,train'], /--split: train is named twice/],
    [
      'a missing --audit directory',
      ['--audit', 'nowhere'],
      /--audit nowhere: not found; write one with 'featcache audit --out nowhere'/,
    ],
    ['a missing --head directory', ['--head', 'nohead'], /--head nohead: not found/],
    ['a negative seed', ['--seed', '-1'], /--seed: expected an integer >= 0, got -1/],
    ['a seed past 32 bits', ['--seed', '1e20'], /--seed: expected an integer in \[0, 4294967295\]/],
    [
      'a huge thumbnail size',
      ['--thumbnail-size', '100000'],
      /--thumbnail-size: expected a positive integer up to 512/,
    ],
  ];
  it('refuses an unusable --out before the layout, with one line and exit 2, writing nothing (thumbnails included)', async () => {
    const work = await tempDir('featcache-map-out-');
    const mine = path.join(work, 'mine.html');
    await fs.writeFile(mine, 'my notes');
    await fs.mkdir(path.join(work, 'folder'));
    await fs.mkdir(path.join(work, 'theirs.thumbs'));
    await fs.writeFile(path.join(work, 'theirs.thumbs', 'holiday.jpg'), 'x');
    const cases: [string, RegExp][] = [
      ['', /--out: expected a file path for the page/],
      ['folder', /--out: expected a file path for the page .*got "folder, a directory"/],
      ['mine.html', /--out: mine.html exists and featcache cannot prove it wrote it/],
      ['mine.html/map.html', /--out mine.html\/map.html: .*mine.html is not a directory/],
      [
        'theirs.html',
        /--out: the page's thumbnails go to theirs.thumbs, which holds files featcache did not write \(holiday.jpg\)/,
      ],
    ];
    for (const [out, message] of cases) {
      // --seed 7: a layout not yet cached, so a refusal after it would show as a new layout file.
      const r = await runCli(['map', '--cache', cache, '--out', out, '--seed', '7', '--epochs', '5'], { cwd: work });
      assert.equal(r.code, 2, `${out}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /layout/, 'refused before the layout');
    }
    assert.deepEqual((await fs.readdir(work)).sort(), ['folder', 'mine.html', 'theirs.thumbs']);
    assert.equal(await fs.readFile(mine, 'utf8'), 'my notes');
    assert.deepEqual(await fs.readdir(path.join(work, 'folder')), []);
    assert.deepEqual(await fs.readdir(path.join(work, 'theirs.thumbs')), ['holiday.jpg']);
  });

  it('makes a missing folder for --out, and keeps stdout for the page alone with --out -', async () => {
    const work = await tempDir('featcache-map-out-');
    const nested = path.join(work, 'reports', 'maps', 'map.html');
    const r = await runCli(['map', '--cache', cache, '--out', nested, '--epochs', '50', '--json'], { cwd: work });
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await fs.stat(nested)).isFile());
    assert.ok((await fs.stat(path.join(work, 'reports', 'maps', 'map.thumbs'))).isDirectory());
    for (const flags of [['--json'], []]) {
      const s = await runCli(['map', '--cache', cache, '--out', '-', '--epochs', '50', ...flags], { cwd: work });
      assert.equal(s.code, 0, s.stderr);
      assert.match(s.stdout, /^<!doctype html>/);
      assert.match(s.stdout, /<\/html>\n?$/, 'stdout ends with the page, no summary after it');
      assert.match(s.stderr, flags.length ? /"points":240/ : /240 images of train/);
    }
  });

  for (const [what, flags, message] of refusals)
    it(`refuses ${what} with one line and exit 2, writing nothing`, async () => {
      const out = path.join(dir, `refused-${flags.join('')}.html`);
      const r = await runCli(['map', '--cache', cache, '--out', out, '--no-thumbnails', ...flags], { cwd: dir });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      await assert.rejects(fs.stat(out), 'no page written');
    });

  it("shows a saved head's predictions on the cached features, as the head's own float64 reference gives them", async () => {
    const head = path.join(dir, 'head');
    await trainHead({ cache, head });
    const features = await FeatureCache.open(cache);
    const rows = [await loadSplit(features, 'train'), await loadSplit(features, 'val')];
    const p = await headPredictions(features, rows, head, () => {});
    assert.ok(p);
    let offset = 0;
    for (const r of rows) {
      const ref = await plainProbabilities(head, r.features, r.count);
      for (let i = 0; i < r.count; i++) {
        const row = Array.from(ref.probabilities.subarray(i * ref.classes, (i + 1) * ref.classes));
        const best = row.indexOf(Math.max(...row));
        assert.equal(p.index[offset + i], best, `${r.split} row ${i}`);
        assert.ok(Math.abs(p.probability[offset + i]! - row[best]!) < 1e-4);
      }
      offset += r.count;
    }
    // The CLI takes it, and colours by it.
    const r = await runCli(
      [
        'map',
        '--cache',
        cache,
        '--head',
        head,
        '--color',
        'prediction',
        '--out',
        path.join(dir, 'pred.html'),
        '--no-thumbnails',
        '--json',
      ],
      { cwd: dir },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match((JSON.parse(r.stdout) as { head: string }).head, /saved head .*head$/);
  });

  it('refuses a head trained on other features (exit 2, naming --head), and skips such a head found by default', async () => {
    const other = path.join(await tempDir('featcache-map-other-'), 'features');
    await ensureManifest(other, syntheticManifest(DIM, { modelSha256: 'b'.repeat(64) }));
    await writeSyntheticPart(other, 'train', 'part-001.arrow', names('o', 60), clusteredRows(60, DIM, 3, 5), {
      dim: DIM,
      provenance: syntheticManifest(DIM, { modelSha256: 'b'.repeat(64) }),
    });
    const otherDir = path.dirname(other);
    await trainHead({ cache: other, head: path.join(otherDir, 'models', 'head') });
    const out = path.join(otherDir, 'x.html');
    const explicit = await runCli(
      ['map', '--cache', cache, '--head', path.join(otherDir, 'models', 'head'), '--out', out, '--no-thumbnails'],
      { cwd: dir },
    );
    assert.equal(explicit.code, 2, explicit.stderr);
    assert.match(explicit.stderr, /--head .*: was trained on features of another model or tap \(bbbbbbbbbbbb…/);
    await assert.rejects(fs.stat(out));
    // Run where models/head is that head: the map is made, without predictions, and says why.
    const found = await runCli(['map', '--cache', cache, '--out', out, '--epochs', '20', '--no-thumbnails', '--json'], {
      cwd: otherDir,
    });
    assert.equal(found.code, 0, found.stderr);
    assert.equal((JSON.parse(found.stdout) as { head: string | null }).head, null);
    assert.match(found.stderr, /the map shows no predictions/);
  });

  it('skips a head of the same backbone that knows none of the cache classes, and refuses it as --head', async () => {
    const other = path.join(await tempDir('featcache-map-classes-'), 'features');
    const manifest = syntheticManifest(DIM, { classes: ['x', 'y'] });
    await ensureManifest(other, manifest);
    await fs.mkdir(path.join(other, 'train'), { recursive: true });
    await writePart(path.join(other, 'train', 'part-001.arrow'), {
      meta: {
        split: 'train',
        shard: '0of1',
        runId: 'r',
        dim: DIM,
        removed: [],
        failures: [],
        provenance: { ...manifest },
      },
      rows: names('o', 60).map((p, i) => ({
        path: p,
        label: i % 2,
        labelName: ['x', 'y'][i % 2]!,
        size: 1,
        mtimeMs: 1,
      })),
      features: clusteredRows(60, DIM, 3, 5),
    });
    const head = path.join(path.dirname(other), 'models', 'head');
    await trainHead({ cache: other, head });
    const features = await FeatureCache.open(cache);
    const rows = [await loadSplit(features, 'train')];
    await assert.rejects(
      headPredictions(features, rows, head, () => {}),
      /head .*: knows none of the classes of cache .* \(x, y against a, b\)/,
    );
    const found = await runCli(
      ['map', '--cache', cache, '--out', 'x.html', '--epochs', '20', '--no-thumbnails', '--json'],
      {
        cwd: path.dirname(other),
      },
    );
    assert.equal(found.code, 0, found.stderr);
    assert.equal((JSON.parse(found.stdout) as { head: string | null }).head, null);
    assert.match(found.stderr, /knows none of the classes .*the map shows no predictions/);
  });

  it('lays out a split of 2 images (k lowered to 1, as umap-learn does) and refuses one of 1 image', async () => {
    const small = path.join(await tempDir('featcache-map-small-'), 'features');
    await syntheticCache(small, DIM);
    await writeSyntheticPart(small, 'two', 'part-001.arrow', names('t', 2), clusteredRows(2, DIM, 2, 3), { dim: DIM });
    await writeSyntheticPart(small, 'one', 'part-001.arrow', names('o', 1), clusteredRows(1, DIM, 1, 4), { dim: DIM });
    const work = path.dirname(small);
    const two = await runCli(['map', '--cache', small, '--split', 'two', '--out', 'two.html', '--json'], { cwd: work });
    assert.equal(two.code, 0, two.stderr);
    const r = JSON.parse(two.stdout) as MapJson;
    assert.equal(r.points, 2);
    assert.equal(r.layout.provenance.graph.k, 1);
    assert.match(two.stderr, /has 2 images, fewer than k \+ 1 = 16; using k = 1/);
    const page = await fs.readFile(path.join(work, 'two.html'), 'utf8');
    const data = JSON.parse(/<script type="application\/json" id="map-data">(.*?)<\/script>/s.exec(page)![1]!) as {
      x: string;
      y: string;
    };
    for (const column of [data.x, data.y]) {
      const bytes = Buffer.from(column, 'base64');
      const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
      assert.equal(values.length, 2);
      assert.ok(values.every(Number.isFinite), `finite coordinates: ${[...values].join(', ')}`);
    }
    const one = await runCli(['map', '--cache', small, '--split', 'one', '--out', 'one.html'], { cwd: work });
    assert.equal(one.code, 2, one.stderr);
    assert.match(one.stderr, /one: 1 image; a map needs at least 2/);
    await assert.rejects(fs.stat(path.join(work, 'one.html')));
  });

  it("reads an audit's scores and flags per point (the split it audited; NaN elsewhere)", async () => {
    const out = path.join(dir, 'audit');
    const result = await audit({ cache, split: 'train', out });
    const features = await FeatureCache.open(cache);
    const rows = [await loadSplit(features, 'train'), await loadSplit(features, 'val')];
    const scores = await auditOf(features, rows, out, () => {});
    assert.equal(scores.score.length, 300);
    result.all.forEach((issue, i) => {
      assert.equal(rows[0]!.paths[i], issue.path);
      if (issue.labelQuality === null) assert.ok(Number.isNaN(scores.score[i]));
      else assert.ok(Math.abs(scores.score[i]! - issue.labelQuality) < 1e-4);
      assert.equal(scores.flags[i]!.includes('label issue (confident learning)'), issue.confidentLearning);
      assert.equal(scores.flags[i]!.includes('neighbours disagree'), issue.knnFlag);
      assert.equal(scores.flags[i]!.includes('outlier (far from all)'), issue.distanceOutlier);
    });
    assert.ok([...scores.score.subarray(240)].every(Number.isNaN));
    assert.ok(scores.flags.slice(240).every((f) => f.length === 0));
    const r = await runCli(
      [
        'map',
        '--cache',
        cache,
        '--audit',
        out,
        '--color',
        'audit',
        '--out',
        path.join(dir, 'audit.html'),
        '--no-thumbnails',
        '--json',
      ],
      { cwd: dir },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { color: string }).color, 'audit');
  });
});
