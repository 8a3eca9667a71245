import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ensureManifest } from '../../src/store/manifest.js';
import { writePart } from '../../src/store/part.js';
import {
  type Duck,
  type RefRow,
  needsIpcReader,
  openDuck,
  readArrowIpc,
  readParquetRows,
  referenceRows,
  sqlString,
} from '../support/duckdb.js';
import {
  extractMobilenet,
  hymenoptera,
  mobilenetModel,
  needsShared,
  runCli,
  tempDir,
  writeColourFolder,
  writeColourImage,
  writeTinyModel,
} from '../support/helpers.js';

const python = '/usr/bin/python3';
const hasNumpy = (() => {
  try {
    execFileSync(python, ['-c', 'import numpy'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const hasTool = (name: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

/** Small batches and parts, so a split spans several part files and an incremental run supersedes some rows. */
const extractArgs = (data: string, split: string, model: string, cache: string) => [
  'extract',
  '--data',
  data,
  '--split',
  split,
  '--model',
  model,
  '--cache',
  cache,
  '--device',
  'cpu',
  '--batch-size',
  '2',
  '--part-rows',
  '3',
];

/** A text float as the float32 featcache stored: exactly the value DuckDB read (a float32 widened to double). */
const f32 = (text: string) => Math.fround(Number(text));

function assertRowsEqual(actual: RefRow[], expected: RefRow[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: row count`);
  actual.forEach((row, i) => {
    const e = expected[i]!;
    assert.equal(row.path, e.path, `${what}: path of row ${i}`);
    assert.equal(row.label, e.label, `${what}: label of ${row.path}`);
    assert.equal(row.labelName, e.labelName, `${what}: label name of ${row.path}`);
    assert.deepEqual(row.feature, e.feature, `${what}: features of ${row.path}`);
  });
}

const byPath = (rows: RefRow[]) => [...rows].sort((a, b) => (a.path < b.path ? -1 : 1));

describe(
  'export formats, row by row against the cache read independently (tiny model)',
  // Skipped test by test without numpy (the independent Arrow reader), so each one is counted.
  () => {
    let dir: string;
    let cache: string;
    let train: RefRow[];
    before(async () => {
      if (needsIpcReader) return;
      dir = await tempDir();
      const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
      await writeColourFolder(path.join(dir, 'data'), 4);
      cache = path.join(dir, 'features');
      for (const split of ['train', 'val'])
        assert.equal((await runCli(extractArgs(path.join(dir, 'data'), split, model, cache))).code, 0);
      train = await referenceRows(cache, 'train');
      assert.ok(
        (await fs.readdir(path.join(cache, 'train'))).filter((n) => n.endsWith('.arrow')).length >= 3,
        'several parts',
      );
    });
    const exportCli = (...args: string[]) => runCli(['export', '--cache', cache, '--json', ...args]);

    it(
      "libsvm: each line is its row's label and exactly its features (1-based, zeros omitted)",
      { skip: needsIpcReader },
      async () => {
        const out = path.join(dir, 'train.svm');
        const r = await exportCli('--split', 'train', '--format', 'libsvm', '--out', out);
        assert.equal(r.code, 0, r.stderr);
        const lines = (await fs.readFile(out, 'utf8')).trim().split('\n');
        assert.equal(lines.length, 12);
        lines.forEach((line, i) => {
          const [label, ...pairs] = line.split(' ');
          const ref = train[i]!;
          assert.equal(Number(label), ref.label, `label of ${ref.path}`);
          const indices = pairs.map((p) => Number(p.split(':')[0]));
          assert.deepEqual(
            indices,
            [...indices].sort((a, b) => a - b),
            'ascending indices',
          );
          assert.ok(
            pairs.every((p) => Number(p.split(':')[1]) !== 0),
            'zeros omitted',
          );
          const dense = new Array<number>(3).fill(0);
          for (const p of pairs) dense[Number(p.split(':')[0]) - 1] = f32(p.split(':')[1]!);
          assert.deepEqual(dense, ref.feature, `features of ${ref.path}`);
        });
        assert.equal(await fs.readFile(`${out}.classes.txt`, 'utf8'), 'blue\ngreen\nred\n');
        const provenance = JSON.parse(await fs.readFile(`${out}.provenance.json`, 'utf8'));
        assert.match(provenance.modelSha256, /^[0-9a-f]{64}$/);
        assert.equal(provenance.tappedTensor, 'pooled');
        assert.equal(provenance.preset.name, 'torchvision');
        assert.equal(provenance.rows, 12);
      },
    );

    it(
      'standard: statistics are fitted on train only, saved, reused with --stats; csv rows are (x - mean) / std of their path',
      { skip: needsIpcReader },
      async () => {
        const trainOut = path.join(dir, 'train-std.csv');
        const valOut = path.join(dir, 'val-std.csv');
        assert.equal(
          (await exportCli('--split', 'train', '--format', 'csv', '--normalize', 'standard', '--out', trainOut)).code,
          0,
        );
        const r = await exportCli('--split', 'val', '--format', 'csv', '--normalize', 'standard', '--out', valOut);
        assert.equal(JSON.parse(r.stdout).normalization.fittedOn, 'train');
        const trainStats = JSON.parse(await fs.readFile(`${trainOut}.stats.json`, 'utf8'));
        const valStats = JSON.parse(await fs.readFile(`${valOut}.stats.json`, 'utf8'));
        assert.deepEqual(valStats, trainStats, 'val was standardised with train statistics');
        const mean0 = train.reduce((s, row) => s + row.feature[0]!, 0) / train.length;
        assert.ok(Math.abs(trainStats.mean[0] - mean0) < 1e-9);
        const reused = path.join(dir, 'val-reused.csv');
        await exportCli(
          '--split',
          'val',
          '--format',
          'csv',
          '--normalize',
          'standard',
          '--stats',
          `${trainOut}.stats.json`,
          '--out',
          reused,
        );
        assert.equal(await fs.readFile(reused, 'utf8'), await fs.readFile(valOut, 'utf8'));
        const val = await referenceRows(cache, 'val');
        const csv = (await fs.readFile(valOut, 'utf8')).trim().split('\n');
        assert.equal(csv[0], 'path,label,label_name,f0,f1,f2');
        assert.equal(csv.length - 1, val.length);
        csv.slice(1).forEach((line, i) => {
          const [p, label, name, ...values] = line.split(',');
          const ref = val[i]!;
          assert.deepEqual([p, Number(label), name], [ref.path, ref.label, ref.labelName]);
          assert.deepEqual(
            values.map(f32),
            ref.feature.map((x, d) => Math.fround((x - trainStats.mean[d]) / trainStats.std[d])),
            `features of ${ref.path}`,
          );
        });
      },
    );

    it(
      'npy: numpy reads float32 [N, D] and int32 labels aligned with paths.txt, each row the l2-normalised features of its path',
      { skip: hasNumpy ? false : 'needs /usr/bin/python3 with numpy (apt-get install python3-numpy)' },
      async () => {
        const out = path.join(dir, 'npy');
        const r = await exportCli('--split', 'train', '--format', 'npy', '--normalize', 'l2', '--out', out);
        assert.equal(r.code, 0, r.stderr);
        const parsed = JSON.parse(
          execFileSync(python, [
            '-c',
            [
              'import numpy as np, json',
              `d = ${JSON.stringify(out)}`,
              'X = np.load(d + "/features.npy"); y = np.load(d + "/labels.npy")',
              'print(json.dumps({"shape": X.shape, "dtype": str(X.dtype), "ydtype": str(y.dtype), "y": y.tolist(), "X": X.astype(float).tolist()}))',
            ].join('\n'),
          ]).toString(),
        );
        assert.deepEqual(parsed.shape, [12, 3]);
        assert.equal(parsed.dtype, 'float32');
        assert.equal(parsed.ydtype, 'int32');
        const paths = (await fs.readFile(path.join(out, 'paths.txt'), 'utf8')).trim().split('\n');
        assert.deepEqual(
          paths,
          train.map((row) => row.path),
        );
        train.forEach((ref, i) => {
          assert.equal(parsed.y[i], ref.label, `label of ${ref.path}`);
          const norm = Math.hypot(...ref.feature);
          ref.feature.forEach((x, d) =>
            assert.ok(
              Math.abs(parsed.X[i][d] - x / norm) < 1e-6,
              `${ref.path}[${d}]: ${parsed.X[i][d]} vs ${x / norm}`,
            ),
          );
        });
        assert.equal(await fs.readFile(path.join(out, 'classes.txt'), 'utf8'), 'blue\ngreen\nred\n');
      },
    );

    it(
      'errors: unknown split, empty cache, unwritable path — one line each, nothing half-written',
      { skip: needsIpcReader },
      async () => {
        const unknown = await exportCli('--split', 'test', '--out', path.join(dir, 'x.svm'));
        assert.equal(unknown.code, 2);
        assert.match(
          unknown.stderr.trim(),
          /^featcache: --split: expected a split of .* with rows \(available: train, val\), got "test"$/,
        );
        const empty = await runCli(['export', '--cache', path.join(dir, 'nothing'), '--out', path.join(dir, 'y.svm')]);
        assert.equal(empty.code, 2);
        assert.match(empty.stderr, /no feature cache here/);
        await fs.writeFile(path.join(dir, 'afile'), '');
        const unwritable = await exportCli('--split', 'train', '--out', path.join(dir, 'afile', 'sub', 'out.svm'));
        assert.equal(unwritable.code, 1);
        assert.match(
          unwritable.stderr.trim(),
          /^featcache: --out .*out\.svm: cannot write \((ENOTDIR|ENOENT)\); nothing was written$/,
        );
        const format = await exportCli('--format', 'bogus', '--out', path.join(dir, 'z.svm'));
        assert.equal(format.code, 2);
        assert.equal(
          format.stderr.trim(),
          'featcache: --format: expected one of "libsvm", "svmlight", "npy", "csv", "parquet", "arrow", got "bogus"',
        );
        assert.ok(
          !existsSync(path.join(dir, 'x.svm')) &&
            !existsSync(path.join(dir, 'y.svm')) &&
            !existsSync(path.join(dir, 'z.svm')),
        );
      },
    );

    it(
      'a part that turns out unreadable mid-export fails in one line and leaves the previous export untouched',
      { skip: needsIpcReader },
      async () => {
        const damaged = path.join(dir, 'damaged');
        await fs.cp(cache, damaged, { recursive: true });
        const parts = (await fs.readdir(path.join(damaged, 'train'))).filter((n) => n.endsWith('.arrow')).sort();
        await fs.writeFile(path.join(damaged, 'train', parts[1]!), 'not arrow');
        for (const format of ['parquet', 'arrow', 'npy']) {
          const out = path.join(dir, `damaged-${format}`);
          await fs.writeFile(path.join(dir, 'keep'), 'previous');
          if (format !== 'npy') await fs.copyFile(path.join(dir, 'keep'), out);
          const r = await runCli(['export', '--cache', damaged, '--format', format, '--out', out]);
          assert.equal(r.code, 1, `${format}: ${r.stderr}`);
          assert.match(
            r.stderr.trim(),
            new RegExp(
              `^featcache: .*${parts[1]!.replace(/\./g, '\\.')}: damaged part file \\(truncated: .*re-run extract`,
            ),
          );
          if (format === 'npy') assert.ok(!existsSync(out), 'no half-written directory');
          else assert.equal(await fs.readFile(out, 'utf8'), 'previous');
          assert.deepEqual(
            (await fs.readdir(dir)).filter((n) => n.endsWith('.tmp')),
            [],
          );
        }
      },
    );

    it('refuses shards whose feature dimensions disagree', { skip: needsIpcReader }, async () => {
      const bad = path.join(dir, 'mixed');
      await ensureManifest(bad, {
        format: 1,
        modelFile: 'm',
        modelSha256: 'a',
        tappedTensor: 't',
        tap: {},
        preset: {},
        exif: 'ignore',
        icc: 'ignore',
        dim: 2,
        classes: ['a'],
        createdAt: '',
        versions: {},
      });
      await fs.mkdir(path.join(bad, 'train'), { recursive: true });
      const part = (dim: number) => ({
        meta: { split: 'train', shard: '0of2', runId: 'r', dim, failures: [], removed: [], provenance: {} },
        rows: [{ path: `p${dim}`, label: 0, labelName: 'a', size: 1, mtimeMs: 1 }],
        features: new Float32Array(dim),
      });
      await writePart(path.join(bad, 'train', 'part-1.arrow'), part(2));
      await writePart(path.join(bad, 'train', 'part-2.arrow'), part(3));
      const r = await runCli(['export', '--cache', bad, '--out', path.join(dir, 'mixed.svm')]);
      assert.equal(r.code, 1);
      assert.match(r.stderr.trim(), /part-2\.arrow: features are 3-d but the cache's are 2-d/);
    });
  },
);

describe(
  'parquet and arrow exports after an incremental run (a changed, a removed and a broken image), read by DuckDB',
  // Skipped test by test without numpy (the independent Arrow reader), so each one is counted.
  () => {
    let dir: string;
    let cache: string;
    let duck: Duck;
    /** The incremental cache read independently, in commit order. */
    let live: RefRow[];
    /** Ground truth: the final image folder extracted into a fresh cache (one run, nothing superseded). */
    let fresh: RefRow[];
    before(async () => {
      if (needsIpcReader) return;
      dir = await tempDir();
      duck = await openDuck();
      const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
      const data = path.join(dir, 'data');
      await writeColourFolder(data, 4);
      cache = path.join(dir, 'features');
      assert.equal((await runCli(extractArgs(data, 'train', model, cache))).code, 0);
      await writeColourImage(path.join(data, 'train/red/red0.png'), [30, 30, 240], 77);
      await fs.rm(path.join(data, 'train/blue/blue1.png'));
      await fs.writeFile(path.join(data, 'train/green/broken.png'), 'not a png');
      const second = await runCli(extractArgs(data, 'train', model, cache));
      assert.equal(second.code, 3, second.stderr);
      live = await referenceRows(cache, 'train');
      const freshCache = path.join(dir, 'fresh');
      await runCli(extractArgs(data, 'train', model, freshCache));
      fresh = await referenceRows(freshCache, 'train');
    });
    after(() => (needsIpcReader ? undefined : duck.close()));

    it(
      'the reference itself: 11 live rows, the changed image with its new features, no removed or broken image',
      { skip: needsIpcReader },
      () => {
        assert.equal(fresh.length, 11);
        assertRowsEqual(byPath(live), byPath(fresh), 'incremental cache vs fresh extraction');
        assert.ok(!live.some((r) => r.path.endsWith('blue1.png') || r.path.endsWith('broken.png')));
      },
    );

    it(
      "parquet: one row per image, aligned path → label → features, the cache's columns, classes and provenance in its metadata",
      { skip: needsIpcReader },
      async () => {
        const out = path.join(dir, 'train.parquet');
        const r = await runCli(['export', '--cache', cache, '--format', 'parquet', '--out', out, '--json']);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(JSON.parse(r.stdout).rows, 11);
        assertRowsEqual(await readParquetRows(duck, out), live, 'parquet export');
        const columns = await duck.query(`describe select * from read_parquet(${sqlString(out)})`);
        assert.deepEqual(
          columns.map((c) => c.column_name),
          ['path', 'label', 'label_name', 'split', 'file_size', 'file_mtime_ms', 'feature'],
        );
        assert.match(String(columns.at(-1)!.column_type), /^FLOAT\[(3)?\]$/);
        const [distinct] = await duck.query(
          `select count(distinct path) as n, count(*) as total from read_parquet(${sqlString(out)})`,
        );
        assert.equal(Number(distinct!.n), 11);
        const meta = new Map(
          (
            await duck.query(`select decode(key) as k, decode(value) as v from parquet_kv_metadata(${sqlString(out)})`)
          ).map((m) => [m.k as string, m.v as string]),
        );
        assert.deepEqual(JSON.parse(meta.get('featcache.classes')!), ['blue', 'green', 'red']);
        const provenance = JSON.parse(meta.get('featcache.provenance')!);
        assert.match(provenance.modelSha256, /^[0-9a-f]{64}$/);
        assert.equal(provenance.rows, 11);
      },
    );

    it(
      'arrow: an IPC file (read by python3 + numpy) with the same rows, class names and provenance in its schema metadata',
      { skip: needsIpcReader },
      async () => {
        const out = path.join(dir, 'train.arrow');
        const r = await runCli(['export', '--cache', cache, '--format', 'arrow', '--normalize', 'none', '--out', out]);
        assert.equal(r.code, 0, r.stderr);
        const [file] = readArrowIpc([out]);
        assertRowsEqual(file!.rows, live, 'arrow export');
        assert.deepEqual(JSON.parse(file!.metadata['featcache.classes']!), ['blue', 'green', 'red']);
        assert.equal(JSON.parse(file!.metadata['featcache.provenance']!).rows, 11);
      },
    );
  },
);

/** The DuckDB snippet of the README's export section, verbatim (the README section is /work/briefs/readme/export.md). */
const README_DUCKDB_SQL = [
  "SELECT label_name, count(*) AS images FROM 'train.parquet' GROUP BY label_name ORDER BY label_name;",
  "SELECT path, feature FROM read_parquet('train.parquet') WHERE label_name = 'red' ORDER BY path LIMIT 2;",
  "SELECT decode(value) AS classes FROM parquet_kv_metadata('train.parquet') WHERE decode(key) = 'featcache.classes';",
];

describe('README: the DuckDB snippet runs on an export', () => {
  it('counts per class, reads feature vectors, finds the class names', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 2);
    const cache = path.join(dir, 'features');
    assert.equal((await runCli(extractArgs(path.join(dir, 'data'), 'train', model, cache))).code, 0);
    assert.equal(
      (await runCli(['export', '--cache', cache, '--format', 'parquet', '--out', path.join(dir, 'train.parquet')]))
        .code,
      0,
    );
    const duck = await openDuck();
    try {
      await duck.query(`SET file_search_path = ${sqlString(dir)}`);
      const [counts, rows, classes] = [
        await duck.query(README_DUCKDB_SQL[0]!),
        await duck.query(README_DUCKDB_SQL[1]!),
        await duck.query(README_DUCKDB_SQL[2]!),
      ];
      assert.deepEqual(
        counts.map((c) => [c.label_name, Number(c.images)]),
        [
          ['blue', 2],
          ['green', 2],
          ['red', 2],
        ],
      );
      assert.deepEqual(
        rows.map((r) => r.path),
        ['train/red/red0.png', 'train/red/red1.png'],
      );
      assert.equal((rows[0]!.feature as number[]).length, 3);
      assert.deepEqual(JSON.parse(classes[0]!.classes as string), ['blue', 'green', 'red']);
    } finally {
      duck.close();
    }
  });
});

describe('export outputs: featcache replaces only what it wrote', () => {
  let dir: string;
  let cache: string;
  before(async () => {
    dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 2);
    cache = path.join(dir, 'features');
    assert.equal((await runCli(extractArgs(path.join(dir, 'data'), 'train', model, cache))).code, 0);
  });
  const exportCli = (args: string[], cwd?: string) => runCli(['export', '--cache', cache, ...args], cwd ? { cwd } : {});

  it("npy into a directory with a user's files is refused in one line, and every file is kept", async () => {
    const out = path.join(dir, 'thesis');
    await fs.mkdir(path.join(out, 'sub'), { recursive: true });
    await fs.writeFile(path.join(out, 'thesis.txt'), 'years of work');
    await fs.writeFile(path.join(out, 'sub', 'data.csv'), '1,2');
    const r = await exportCli(['--format', 'npy', '--out', out]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(
      r.stderr,
      /^featcache: --out: expected a new or empty directory, or one featcache wrote .*choose another directory/,
    );
    assert.equal(await fs.readFile(path.join(out, 'thesis.txt'), 'utf8'), 'years of work');
    assert.equal(await fs.readFile(path.join(out, 'sub', 'data.csv'), 'utf8'), '1,2');
    assert.deepEqual((await fs.readdir(out)).sort(), ['sub', 'thesis.txt']);
  });

  it('--out . is refused: for npy (a non-empty directory) and for a file format (a directory)', async () => {
    const cwd = path.join(dir, 'cwd');
    await fs.mkdir(cwd);
    await fs.writeFile(path.join(cwd, 'notes.txt'), 'mine');
    for (const format of ['npy', 'csv']) {
      const r = await exportCli(['--format', format, '--out', '.'], cwd);
      assert.equal(r.code, 2, `${format}: ${r.stderr}`);
      assert.match(r.stderr.trim(), /^featcache: --out: expected /);
    }
    assert.deepEqual(await fs.readdir(cwd), ['notes.txt']);
    assert.equal(await fs.readFile(path.join(cwd, 'notes.txt'), 'utf8'), 'mine');
  });

  it('npy again into its own directory replaces only its files: a file the user added is kept, stale outputs go', async () => {
    const out = path.join(dir, 'npy');
    assert.equal((await exportCli(['--format', 'npy', '--normalize', 'standard', '--out', out])).code, 0);
    assert.ok(existsSync(path.join(out, 'stats.json')));
    await fs.writeFile(path.join(out, 'README.user'), 'my notes');
    const r = await exportCli(['--format', 'npy', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await fs.readdir(out)).sort(), [
      '.featcache-export.json',
      'README.user',
      'classes.txt',
      'features.npy',
      'labels.npy',
      'paths.txt',
      'provenance.json',
    ]);
    assert.equal(await fs.readFile(path.join(out, 'README.user'), 'utf8'), 'my notes');
  });

  it('/dev/stdout and - are written through: the rows arrive on stdout, the summary on stderr', async () => {
    const reference = path.join(dir, 'ref.csv');
    assert.equal((await exportCli(['--format', 'csv', '--out', reference])).code, 0);
    const expected = await fs.readFile(reference, 'utf8');
    for (const out of ['/dev/stdout', '-']) {
      const r = await exportCli(['--format', 'csv', '--out', out]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, expected, out);
      assert.match(r.stderr, /export train: 6 rows/);
    }
    const stat = await fs.lstat('/dev/stdout');
    assert.ok(stat.isSymbolicLink() || stat.isCharacterDevice(), '/dev/stdout is still the system node');
  });

  it('a FIFO is written through to its reader; a character device stays a device', async () => {
    const reference = path.join(dir, 'ref.svm');
    assert.equal((await exportCli(['--format', 'libsvm', '--out', reference])).code, 0);
    const fifo = path.join(dir, 'pipe');
    execFileSync('mkfifo', [fifo]);
    const reader = spawn('cat', [fifo]);
    let received = '';
    reader.stdout.on('data', (d) => (received += d));
    const closed = new Promise((resolve) => reader.on('close', resolve));
    const r = await exportCli(['--format', 'libsvm', '--out', fifo]);
    await closed;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(received, await fs.readFile(reference, 'utf8'));
    assert.ok((await fs.lstat(fifo)).isFIFO(), 'the FIFO is still a FIFO');
    const devNull = await exportCli(['--format', 'csv', '--out', '/dev/null']);
    assert.equal(devNull.code, 0, devNull.stderr);
    assert.ok((await fs.stat('/dev/null')).isCharacterDevice());
  });

  it('a symlink is followed: its target gets the export, the link stays a link (also when it dangles)', async () => {
    const target = path.join(dir, 'real.parquet');
    const link = path.join(dir, 'link.parquet');
    await fs.writeFile(target, 'old');
    await fs.symlink(target, link);
    assert.equal((await exportCli(['--format', 'parquet', '--out', link])).code, 0);
    assert.ok((await fs.lstat(link)).isSymbolicLink());
    assert.equal((await fs.readFile(target)).subarray(0, 4).toString('latin1'), 'PAR1');
    const dangling = path.join(dir, 'dangling.csv');
    await fs.symlink(path.join(dir, 'made-by-export.csv'), dangling);
    assert.equal((await exportCli(['--format', 'csv', '--out', dangling])).code, 0);
    assert.ok((await fs.lstat(dangling)).isSymbolicLink());
    assert.match(await fs.readFile(path.join(dir, 'made-by-export.csv'), 'utf8'), /^path,label/);
  });
});

// Skipped per test (not per suite), so a machine without ../shared or LIBSVM still counts it as skipped.
describe('interop with LIBSVM and LIBLINEAR on real features', () => {
  const skip =
    needsShared(mobilenetModel, hymenoptera) ||
    (hasTool('svm-train') && hasTool('liblinear-train')
      ? false
      : 'needs svm-train and liblinear-train (apt-get install libsvm-tools liblinear-tools)');
  it('a linear SVM on the MobileNetV2 export beats the majority-class guess by a wide margin', { skip }, async () => {
    const dir = await tempDir();
    const cache = path.join(dir, 'features');
    for (const split of ['train', 'val']) {
      assert.equal((await extractMobilenet(hymenoptera, split, cache)).code, 0);
      assert.equal(
        (
          await runCli([
            'export',
            '--cache',
            cache,
            '--split',
            split,
            '--format',
            'libsvm',
            '--normalize',
            'l2',
            '--out',
            path.join(dir, `${split}.svm`),
          ])
        ).code,
        0,
      );
    }
    const svm = (args: string[]) => execFileSync(args[0]!, args.slice(1), { cwd: dir }).toString();
    svm(['svm-train', '-q', '-t', '0', 'train.svm', 'svm.model']);
    const libsvm =
      Number(/Accuracy = ([\d.]+)%/.exec(svm(['svm-predict', 'val.svm', 'svm.model', 'svm.out']))![1]) / 100;
    svm(['liblinear-train', '-q', 'train.svm', 'linear.model']);
    const liblinear =
      Number(/Accuracy = ([\d.]+)%/.exec(svm(['liblinear-predict', 'val.svm', 'linear.model', 'linear.out']))![1]) /
      100;
    const labels = (await fs.readFile(path.join(dir, 'val.svm'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => l.split(' ')[0]);
    const majority = Math.max(...['0', '1'].map((c) => labels.filter((l) => l === c).length)) / labels.length;
    assert.ok(libsvm >= majority + 0.25, `LIBSVM ${libsvm} vs majority ${majority}`);
    assert.ok(liblinear >= majority + 0.25, `LIBLINEAR ${liblinear} vs majority ${majority}`);
  });
});
