/**
 * `featcache similar` end to end on real features (monkeys validation through MobileNetV2-int8): cached-path and
 * image-file queries in one run, checked against cosine similarities recomputed here in plain JS from the cache
 * reader's features and against exactKnn; the --json, --csv and --report outputs; a query that resolves to nothing.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import type { SimilarResult } from '../../src/jobs/similar.js';
import { exactKnn } from '../../src/neighbors/exact.js';
import { FeatureCache } from '../../src/store/reader.js';
import { cosine, runCli, tempDir } from '../support/helpers.js';
import { monkeys, monkeysCache, needsMonkeys } from '../support/neighbors.js';

const K = 5;

interface Fixture {
  cache: string;
  dir: string;
  paths: string[];
  features: Float32Array;
  dim: number;
  /** A row with no other row at similarity ≥ 0.9999 (monkeys has byte-identical copies), so its top-1 is itself. */
  query: number;
  /** Plain-JS cosine similarities of the query row to every row, best first. */
  ranked: { row: number; similarity: number }[];
}

function rankByCosine(f: Pick<Fixture, 'features' | 'dim' | 'paths'>, row: number) {
  const at = (i: number) => f.features.subarray(i * f.dim, (i + 1) * f.dim);
  return f.paths
    .map((_, i) => ({ row: i, similarity: cosine(at(row), at(i)) }))
    .sort((a, b) => b.similarity - a.similarity);
}

describe('featcache similar', { skip: needsMonkeys }, () => {
  let f: Fixture;

  before(async () => {
    const dir = await tempDir('featcache-similar-');
    const cache = await monkeysCache(['validation'], path.join(dir, 'features'));
    const set = await (await FeatureCache.open(cache)).read('validation');
    const base = { paths: set.paths, features: set.features, dim: set.dim };
    let query = -1;
    let ranked: Fixture['ranked'] = [];
    for (let row = 0; row < set.count && query < 0; row++) {
      ranked = rankByCosine(base, row);
      if (ranked[1]!.similarity < 0.9999) query = row;
    }
    assert.ok(query >= 0, 'monkeys validation has a row without an exact copy');
    f = { cache, dir, ...base, query, ranked };
  });

  it('answers every query of one run: a cached path (itself first, then exactKnn neighbours) and an image file', async () => {
    const cachedPath = f.paths[f.query]!;
    const copy = path.join(f.dir, 'queries', `copy${path.extname(cachedPath)}`);
    await fs.mkdir(path.dirname(copy), { recursive: true });
    await fs.copyFile(path.join(monkeys, cachedPath), copy);
    const csv = path.join(f.dir, 'out.csv');
    const report = path.join(f.dir, 'similar.html');
    const run = await runCli([
      'similar',
      ...[cachedPath, copy],
      ...['--cache', f.cache, '--split', 'validation', '--k', String(K), '--device', 'cpu'],
      ...['--json', '--csv', csv, '--report', report],
    ]);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as SimilarResult;
    assert.equal(result.failed, 0);
    assert.deepEqual(
      result.answers.map((a) => [a.query, a.source]),
      [
        [cachedPath, 'cached'],
        [copy, 'image'],
      ],
    );

    // (1) the cached row: itself first at similarity 1, then the same neighbours as plain JS cosine and exactKnn.
    const byRow = result.answers[0]!.neighbours;
    assert.equal(byRow.length, K);
    assert.equal(byRow[0]!.path, cachedPath);
    assert.ok(Math.abs(byRow[0]!.similarity - 1) < 1e-5, `self similarity ${byRow[0]!.similarity}`);
    const expected = f.ranked.slice(0, K);
    assert.deepEqual(
      byRow.map((n) => n.path),
      expected.map((e) => f.paths[e.row]),
    );
    byRow.forEach((n, i) => assert.ok(Math.abs(n.similarity - expected[i]!.similarity) < 1e-5, `rank ${i + 1}`));
    const q = f.features.slice(f.query * f.dim, (f.query + 1) * f.dim);
    const knn = await exactKnn(q, 1, f.features, f.paths.length, f.dim, { k: K, metric: 'cosine' });
    assert.deepEqual(
      byRow.map((n) => n.path),
      Array.from(knn.indices, (i) => f.paths[i]),
    );

    // (2) the image file, embedded with the cache's model: its cached original is top-1.
    const byImage = result.answers[1]!.neighbours;
    assert.equal(byImage[0]!.path, cachedPath);
    assert.ok(byImage[0]!.similarity > 0.99, `copy's similarity ${byImage[0]!.similarity}`);
    assert.ok(byImage[1]!.similarity < byImage[0]!.similarity);

    // (3) CSV: header + K rows per query, same neighbours and similarities as the JSON.
    const lines = (await fs.readFile(csv, 'utf8')).trim().split('\n');
    assert.equal(lines[0], 'query,rank,path,label,similarity');
    assert.equal(lines.length, 1 + 2 * K);
    const rows = lines.slice(1).map((l) => l.split(','));
    for (const [a, answer] of result.answers.entries())
      answer.neighbours.forEach((n, r) => {
        const row = rows[a * K + r]!;
        assert.deepEqual(row.slice(0, 4), [answer.query, String(r + 1), n.path, n.label ?? '']);
        assert.ok(Math.abs(Number(row[4]) - n.similarity) < 1e-4);
      });
    // --report: an HTML page naming every neighbour, with thumbnails.
    const html = await fs.readFile(report, 'utf8');
    for (const answer of result.answers) for (const n of answer.neighbours) assert.ok(html.includes(n.path), n.path);
    assert.equal((html.match(/<img /g) ?? []).length, 2 * (K + 1));
  });

  it('a query that is neither a file nor a cached path fails alone with a one-line error and exit code 3', async () => {
    const cachedPath = f.paths[f.query]!;
    const missing = path.join(f.dir, 'no-such-image.jpg');
    const some = await runCli([
      ...['similar', missing, cachedPath, `./${cachedPath}`],
      ...['--cache', f.cache, '--split', 'validation'],
    ]);
    assert.equal(some.code, 3, some.stderr);
    const lines = some.stdout.trim().split('\n');
    assert.match(
      lines.find((l) => l.startsWith(missing))!,
      /no such file/,
    );
    assert.equal(lines.filter((l) => l.startsWith(missing)).length, 1);
    assert.ok(lines.includes(cachedPath), 'the good query is still answered');
    assert.ok(lines.includes(`./${cachedPath}`), 'a ./-prefixed cached path names the same row');
    assert.equal(lines.filter((l) => /^\s+\d+\s/.test(l)).length, 20, 'default --k 10 neighbours per good query');

    const all = await runCli(['similar', missing, '--cache', f.cache, '--split', 'validation', '--json']);
    assert.equal(all.code, 3, all.stderr);
    const result = JSON.parse(all.stdout) as SimilarResult;
    assert.equal(result.failed, 1);
    assert.deepEqual(result.answers[0]!.neighbours, []);
    assert.match(result.answers[0]!.error!, /^[^\n]*no such file[^\n]*$/);
  });
});
