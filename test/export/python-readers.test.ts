/**
 * README's Python snippets for reading featcache's outputs, run verbatim (read from README.md) with pandas, pyarrow
 * and polars from the test venv, against featcache's own reader: same rows, labels, class names and features.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FeatureCache } from '../../src/store/reader.js';
import { runCli, tempDir, writeColourFolder, writeColourImage, writeTinyModel } from '../support/helpers.js';
import { pythonEnv } from '../support/python-venv.js';
import { README_PYTHON, readmeBlock, readmeBlocks, runPythonBlock } from '../support/readme.js';

const py = await pythonEnv();

/** Small parts, so the split spans several part files and the incremental run supersedes some rows. */
const extractArgs = (data: string, model: string, cache: string) =>
  ['extract', '--data', data, '--split', 'train', '--model', model, '--cache', cache, '--device', 'cpu'].concat([
    '--batch-size',
    '2',
    '--part-rows',
    '3',
  ]);

interface Expected {
  classes: string[];
  byPath: Map<string, { label: number; feature: number[] }>;
}

/** What a snippet left: features X, labels y (null for none), class names and each row's path. */
interface SnippetRows {
  X: number[][];
  y: (number | null)[];
  classes: string[];
  paths: string[];
}

function assertSameRows(got: SnippetRows, expected: Expected, what: string): void {
  assert.deepEqual(got.classes, expected.classes, `${what}: class names`);
  assert.equal(got.paths.length, expected.byPath.size, `${what}: row count`);
  assert.equal(new Set(got.paths).size, got.paths.length, `${what}: each image once`);
  assert.equal(got.X.length, got.paths.length, `${what}: one feature row per path`);
  assert.equal(got.y.length, got.paths.length, `${what}: one label per path`);
  got.paths.forEach((p, i) => {
    const e = expected.byPath.get(p);
    assert.ok(e, `${what}: ${p} is not a live row of featcache's reader`);
    assert.equal(got.y[i], e.label, `${what}: label of ${p}`);
    // float32 → float64 in numpy → JSON is exact, so the values must be equal, not close.
    assert.deepEqual(got.X[i], e.feature, `${what}: features of ${p}`);
  });
}

describe('README: Python readers of exports and compacted parts (pandas, pyarrow, polars)', () => {
  let dir: string;
  let cache: string;
  let expected: Expected;
  before(async () => {
    dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    const data = path.join(dir, 'data');
    await writeColourFolder(data, 4);
    cache = path.join(dir, 'features');
    assert.equal((await runCli(extractArgs(data, model, cache))).code, 0);
    // An incremental run: a changed image (new features), a removed one and a broken one.
    await writeColourImage(path.join(data, 'train/red/red0.png'), [30, 30, 240], 77);
    await fs.rm(path.join(data, 'train/blue/blue1.png'));
    await fs.writeFile(path.join(data, 'train/green/broken.png'), 'not a png');
    assert.equal((await runCli(extractArgs(data, model, cache))).code, 3);
    const set = await (await FeatureCache.open(cache)).read('train');
    expected = { classes: set.classes, byPath: new Map() };
    set.paths.forEach((p, i) =>
      expected.byPath.set(p, {
        label: set.labels[i]!,
        feature: Array.from(set.features.subarray(i * set.dim, (i + 1) * set.dim)),
      }),
    );
    assert.equal(expected.byPath.size, 11, 'the reference: 12 images, one removed, one broken');
    for (const format of ['parquet', 'arrow']) {
      const r = await runCli([
        'export',
        '--cache',
        cache,
        '--format',
        format,
        '--out',
        path.join(dir, `train.${format}`),
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  it('every ```python block of README is one that a test runs', () => {
    const picks = Object.values(README_PYTHON);
    for (const block of readmeBlocks('python')) {
      const n = picks.filter((pick) => pick(block.code)).length;
      assert.equal(n, 1, `README.md line ${block.line}: a Python block that no test runs (or more than one claims)`);
    }
    assert.equal(readmeBlocks('python').length, picks.length);
  });

  it('pandas / pyarrow read the Parquet export', { skip: py.needs('pandas', 'pyarrow', 'numpy') }, async () => {
    const block = readmeBlock('python', README_PYTHON.pandasParquet, 'pandas / pyarrow');
    const got = (await runPythonBlock(py, block, dir, {
      X: 'X.tolist()',
      y: 'y.tolist()',
      classes: 'classes',
      paths: 'df["path"].tolist()',
      shape: 'list(X.shape)',
      dtype: 'str(X.dtype)',
    })) as unknown as SnippetRows & { shape: number[]; dtype: string };
    assertSameRows(got, expected, 'pandas parquet');
    assert.deepEqual(got.shape, [11, 3]);
    assert.equal(got.dtype, 'float32');
  });

  it('polars reads the Parquet export', { skip: py.needs('polars', 'numpy') }, async () => {
    const block = readmeBlock('python', README_PYTHON.polarsParquet, 'polars');
    const got = (await runPythonBlock(py, block, dir, {
      X: 'X.tolist()',
      y: 'y.tolist()',
      classes: 'classes',
      paths: 'df["path"].to_list()',
      shape: 'list(X.shape)',
    })) as unknown as SnippetRows & { shape: number[] };
    assertSameRows(got, expected, 'polars parquet');
    assert.deepEqual(got.shape, [11, 3]);
  });

  it(
    'pyarrow, pandas and polars read the Arrow IPC export',
    { skip: py.needs('pyarrow', 'pandas', 'polars') },
    async () => {
      const block = readmeBlock('python', README_PYTHON.arrowIpc, 'Arrow IPC');
      const got = (await runPythonBlock(py, block, dir, {
        X: 'X.tolist()',
        y: 'y.tolist()',
        classes: 'classes',
        paths: 'df["path"].tolist()',
        tablePaths: 'table.column("path").to_pylist()',
      })) as unknown as SnippetRows & { tablePaths: string[] };
      assertSameRows(got, expected, 'arrow export');
      assert.deepEqual(got.tablePaths, got.paths, 'pyarrow and pandas see the same rows in the same order');
    },
  );

  it(
    'polars reads the part files after featcache compact, and not before it',
    { skip: py.needs('polars') },
    async () => {
      const block = readmeBlock('python', README_PYTHON.compactedParts, 'compacted parts');
      const expressions = { X: 'X.tolist()', y: 'y.tolist()', classes: 'classes', paths: 'df["path"].to_list()' };
      // Before compact the parts are a log: the superseded red0 row is still there, so the snippet must not be used.
      const raw = (await runPythonBlock(py, block, dir, expressions)) as unknown as SnippetRows;
      assert.ok(
        raw.paths.length > expected.byPath.size,
        'uncompacted parts hold superseded rows (else this proves nothing)',
      );
      const r = await runCli(['compact', '--cache', cache, '--split', 'train']);
      assert.equal(r.code, 0, r.stderr);
      const got = (await runPythonBlock(py, block, dir, expressions)) as unknown as SnippetRows;
      assertSameRows(got, expected, 'compacted parts');
    },
  );
});
