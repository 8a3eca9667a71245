/**
 * featcache's cache folder for derived models: the model hash per (path, size, mtime), the tapped graph per model
 * sha256, onnxruntime's optimised graph per (graph, onnxruntime version, CPU). What is cached must give the same
 * features as what is rebuilt, and anything stale (a changed model, another onnxruntime) must be rebuilt.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { type Backbone, openBackbone } from '../../src/backbone/index.js';
import { modelDir, onnxruntimeVersion } from '../../src/backbone/model-cache.js';
import { sha256File } from '../../src/util/fsx.js';
import { featcacheCacheDir } from '../../src/util/cache-dir.js';
import { tempDir } from '../support/helpers.js';
import { tinyInputs, writeTinyCnn } from '../support/tiny-cnn.js';

const SIZE = 32;

async function features(file: string, modelCache: string): Promise<{ backbone: Backbone; features: Float32Array }> {
  const backbone = await openBackbone(file, { device: { kind: 'cpu' }, threads: 1, modelCache });
  try {
    return { backbone, features: await backbone.extract(tinyInputs(3, SIZE, 7), 3, SIZE) };
  } finally {
    await backbone.close();
  }
}

async function optimisedRecord(cacheDir: string, sha256: string): Promise<string> {
  const dir = modelDir(cacheDir, sha256);
  const name = (await fs.readdir(dir)).find((n) => n.endsWith('.ort-cpu.onnx.json'));
  assert.ok(name, `an optimised graph record in ${dir}`);
  return path.join(dir, name);
}

describe('model cache', () => {
  it('reuses the hash, tapped graph and optimised graph, with the same features, and writes nothing beside the model', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'models/tiny.onnx'), { size: SIZE, seed: 1 });
    const cacheDir = path.join(dir, 'cache');
    await fs.chmod(path.dirname(file), 0o555);
    try {
      const first = await features(file, cacheDir);
      assert.deepEqual(
        [first.backbone.setup.hashReused, first.backbone.setup.tappedReused, first.backbone.setup.optimised],
        [false, false, 'saved'],
      );
      assert.equal(first.backbone.sha256, await sha256File(file));
      const second = await features(file, cacheDir);
      assert.deepEqual(
        [second.backbone.setup.hashReused, second.backbone.setup.tappedReused, second.backbone.setup.optimised],
        [true, true, 'loaded'],
      );
      assert.equal(second.backbone.sha256, first.backbone.sha256);
      assert.equal(second.backbone.dim, first.backbone.dim);
      assert.deepEqual(second.features, first.features);
      assert.deepEqual(await fs.readdir(path.dirname(file)), ['tiny.onnx']);
      assert.ok((await fs.readdir(modelDir(cacheDir, first.backbone.sha256))).some((n) => n.startsWith('tapped-')));
    } finally {
      await fs.chmod(path.dirname(file), 0o755);
    }
  });

  it('rebuilds everything when the model file changes in place', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'tiny.onnx'), { size: SIZE, seed: 1 });
    const cacheDir = path.join(dir, 'cache');
    const before = await features(file, cacheDir);
    await writeTinyCnn(file, { size: SIZE, seed: 2 });
    const after = await features(file, cacheDir);
    assert.deepEqual(
      [after.backbone.setup.hashReused, after.backbone.setup.tappedReused, after.backbone.setup.optimised],
      [false, false, 'saved'],
    );
    assert.equal(after.backbone.sha256, await sha256File(file));
    assert.notEqual(after.backbone.sha256, before.backbone.sha256);
    assert.notDeepEqual(after.features, before.features);
    // The reference: the new model opened with an empty cache.
    const fresh = await features(file, path.join(dir, 'fresh-cache'));
    assert.deepEqual(after.features, fresh.features);
  });

  it('rebuilds the optimised graph when the recorded onnxruntime version differs, or the file was altered', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'tiny.onnx'), { size: SIZE, seed: 3 });
    const cacheDir = path.join(dir, 'cache');
    const first = await features(file, cacheDir);
    const record = await optimisedRecord(cacheDir, first.backbone.sha256);
    const saved = JSON.parse(await fs.readFile(record, 'utf8')) as { onnxruntime: string };
    assert.equal(saved.onnxruntime, onnxruntimeVersion());
    await fs.writeFile(record, JSON.stringify({ ...saved, onnxruntime: '1.0.0' }));

    const rebuilt = await features(file, cacheDir);
    assert.equal(rebuilt.backbone.setup.optimised, 'saved');
    assert.equal(rebuilt.backbone.setup.tappedReused, true);
    assert.equal(
      (JSON.parse(await fs.readFile(record, 'utf8')) as { onnxruntime: string }).onnxruntime,
      onnxruntimeVersion(),
    );
    assert.deepEqual(rebuilt.features, first.features);

    // A damaged optimised graph (its size no longer matches its record) is rebuilt, not loaded.
    const graph = record.replace(/\.json$/, '');
    await fs.writeFile(graph, 'not a model');
    const repaired = await features(file, cacheDir);
    assert.equal(repaired.backbone.setup.optimised, 'saved');
    assert.deepEqual(repaired.features, first.features);
    assert.equal((await features(file, cacheDir)).backbone.setup.optimised, 'loaded');
  });

  it('runs without caching when the cache folder cannot be written', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'tiny.onnx'), { size: SIZE, seed: 4 });
    const blocker = path.join(dir, 'a-file');
    await fs.writeFile(blocker, '');
    const unwritable = path.join(blocker, 'cache');
    const r = await features(file, unwritable);
    assert.deepEqual([r.backbone.setup.hashReused, r.backbone.setup.optimised], [false, 'none']);
    assert.deepEqual(r.features, (await features(file, path.join(dir, 'cache'))).features);
    assert.deepEqual((await fs.readdir(dir)).sort(), ['a-file', 'cache', 'tiny.onnx']);
  });

  it('lives in FEATCACHE_CACHE_DIR, else $XDG_CACHE_HOME/featcache, else ~/.cache/featcache', () => {
    assert.equal(featcacheCacheDir({ FEATCACHE_CACHE_DIR: '/x/y' }), '/x/y');
    assert.equal(featcacheCacheDir({ XDG_CACHE_HOME: '/xdg' }), '/xdg/featcache');
    assert.equal(featcacheCacheDir({ XDG_CACHE_HOME: 'relative' }).endsWith('/.cache/featcache'), true);
  });
});
