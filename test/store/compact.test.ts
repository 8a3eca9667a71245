import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { compactedNames } from '../../src/store/compact.js';
import { FeatureCache } from '../../src/store/reader.js';
import { type RefRow, needsIpcReader, readArrowIpc, referenceRows } from '../support/duckdb.js';
import { runCli, tempDir, writeColourFolder, writeColourImage, writeTinyModel } from '../support/helpers.js';

const byPath = (rows: RefRow[]) => [...rows].sort((a, b) => (a.path < b.path ? -1 : 1));

async function partFiles(cache: string): Promise<string[]> {
  const dir = path.join(cache, 'train');
  return (await fs.readdir(dir))
    .filter((n) => /^part-.*\.arrow$/.test(n))
    .sort()
    .map((n) => path.join(dir, n));
}

/** The split through featcache's own reader, sorted by path: what every command sees. */
async function view(cache: string) {
  const c = await FeatureCache.open(cache);
  const set = await c.read('train');
  return {
    paths: set.paths,
    labels: [...set.labels],
    features: [...set.features],
    failures: (await c.failures('train')).map((f) => f.path),
  };
}

// Tests that read the part files independently skip one by one without numpy; the rest run everywhere.
describe('compactSplit: part files without superseded rows, atomically', () => {
  let dir: string;
  let base: string;
  let expected: RefRow[];
  let expectedView: Awaited<ReturnType<typeof view>>;
  let copies = 0;
  const copy = async () => {
    const target = path.join(dir, `copy${copies++}`);
    await fs.cp(base, target, { recursive: true });
    return target;
  };

  before(async () => {
    dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    const data = path.join(dir, 'data');
    await writeColourFolder(data, 4);
    base = path.join(dir, 'features');
    const extract = () =>
      runCli([
        'extract',
        '--data',
        data,
        '--split',
        'train',
        '--model',
        model,
        '--cache',
        base,
        '--device',
        'cpu',
        '--batch-size',
        '2',
        '--part-rows',
        '3',
      ]);
    assert.equal((await extract()).code, 0);
    await writeColourImage(path.join(data, 'train/red/red0.png'), [30, 30, 240], 77);
    await writeColourImage(path.join(data, 'train/green/green2.png'), [20, 250, 20], 78);
    await fs.rm(path.join(data, 'train/blue/blue1.png'));
    await fs.writeFile(path.join(data, 'train/green/broken.png'), 'not a png');
    assert.equal((await extract()).code, 3);
    expectedView = await view(base);
    assert.equal(expectedView.paths.length, 11);
    if (!needsIpcReader) {
      expected = byPath(await referenceRows(base, 'train'));
      assert.equal(expected.length, 11);
    }
    assert.deepEqual(expectedView.failures, ['train/green/broken.png']);
  });

  it(
    'before: reading the part files directly sees superseded rows (the problem compaction solves)',
    { skip: needsIpcReader },
    async () => {
      const rows = readArrowIpc(await partFiles(base)).flatMap((f) => f.rows);
      assert.ok(rows.length > expected.length, `${rows.length} rows in the parts, ${expected.length} live`);
      assert.ok(
        rows.some((r) => r.path === 'train/blue/blue1.png'),
        'the removed image is still in a part',
      );
    },
  );

  it(
    'after: the part files read directly hold each live row once, with its newest features; the failure ledger stays',
    { skip: needsIpcReader },
    async () => {
      const cache = await copy();
      const r = await runCli(['compact', '--cache', cache, '--split', 'train', '--part-rows', '4', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout);
      assert.equal(result.compacted, true);
      assert.equal(result.rows, 11);
      assert.equal(result.partsAfter, 3);
      const parts = await partFiles(cache);
      assert.equal(parts.length, 3);
      assert.deepEqual(byPath(readArrowIpc(parts).flatMap((f) => f.rows)), expected);
      assert.deepEqual(await view(cache), expectedView);
      const again = await runCli(['compact', '--cache', cache, '--split', 'train', '--json']);
      assert.equal(JSON.parse(again.stdout).compacted, false, 'a compact split is left alone');
      assert.deepEqual(await partFiles(cache), parts);
    },
  );

  it('an incremental extract after compaction finds nothing to do, and later parts still win', async () => {
    const cache = await copy();
    assert.equal((await runCli(['compact', '--cache', cache, '--split', 'train'])).code, 0);
    const model = path.join(dir, 'tiny.onnx');
    const data = path.join(dir, 'data');
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
    assert.match(r.stdout, / 0 extracted, 12 unchanged, 0 removed/, '11 rows and the failure are unchanged');
    assert.deepEqual(await view(cache), expectedView);
  });

  for (const point of ['index:1', 'part:1', 'index:2', 'part:3', 'removed:1', 'removed:2', 'removed:4']) {
    it(
      `kill -9 at ${point}: the cache reads the same, and compacting again finishes the job`,
      { skip: needsIpcReader },
      async () => {
        const cache = await copy();
        const killed = await runCli(['compact', '--cache', cache, '--split', 'train', '--part-rows', '4'], {
          env: { FEATCACHE_TEST_COMPACT_KILL: point },
        });
        assert.equal(killed.signal, 'SIGKILL', `killed at ${point}: ${killed.stderr}`);
        assert.deepEqual(await view(cache), expectedView, "featcache's reader");
        assert.deepEqual(byPath(await referenceRows(cache, 'train')), expected, 'the independent reader');
        const r = await runCli(['compact', '--cache', cache, '--split', 'train', '--part-rows', '4', '--json']);
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(byPath(readArrowIpc(await partFiles(cache)).flatMap((f) => f.rows)), expected);
        assert.deepEqual(await view(cache), expectedView);
        const leftovers = (await fs.readdir(path.join(cache, 'train'))).filter(
          (n) => n.endsWith('.tmp') || n.startsWith('.lock'),
        );
        assert.deepEqual(leftovers, []);
      },
    );
  }

  it("refuses while an extract holds the split's lock, and changes nothing", async () => {
    const cache = await copy();
    const lock = path.join(cache, 'train', '.lock-0of1');
    await fs.writeFile(
      lock,
      JSON.stringify({ pid: process.pid, host: os.hostname(), since: new Date().toISOString() }),
    );
    const before = await fs.readdir(path.join(cache, 'train'));
    const r = await runCli(['compact', '--cache', cache, '--split', 'train']);
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim(), /^featcache: .*shard 0of1: another featcache process \(pid \d+/);
    assert.deepEqual((await fs.readdir(path.join(cache, 'train'))).sort(), before.sort());
  });

  it('an unknown split is one line naming the option', async () => {
    const r = await runCli(['compact', '--cache', base, '--split', 'test']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.trim(), /^featcache: --split: expected a split of .* \(available: train\), got "test"$/);
  });
});

describe('compactedNames', () => {
  it('sort after the last part and before any part a later run writes', () => {
    const last = 'part-001795691387826-0of1-18654-000003.arrow';
    const names = compactedNames(last, 3);
    const later = [
      'part-001795691387826-0of1-18654-000004.arrow',
      'part-001795691399999-0of1-20000-000000.arrow',
      'part-001795691387826-1of2-18654-000000.arrow',
    ];
    const sorted = [last, ...names, ...later].sort();
    assert.deepEqual(sorted.slice(0, 4), [last, ...names]);
    const next = compactedNames(names.at(-1)!, 1)[0]!;
    assert.equal(next, 'part-001795691387826-0of1-18654-000003~c000003.arrow');
    assert.ok([names.at(-1)!, next].sort()[1] === next);
  });
});
