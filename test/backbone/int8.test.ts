import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { openBackbone } from '../../src/backbone/index.js';
import { pixelCalibrationSource } from '../../src/backbone/calibration-source.js';
import { featureFidelity } from '../../src/backbone/fidelity.js';
import { checkFeaturePrecision, ensureInt8Model, int8Paths, savedInt8Model } from '../../src/backbone/int8.js';
import { FeatcacheError } from '../../src/errors.js';
import { identityDifferences } from '../../src/store/manifest.js';
import { tempDir, writeTinyModel } from '../support/helpers.js';
import { TINY_CNN_DIM, tinyInputs, tinySource as tinySourceOf, writeTinyCnn } from '../support/tiny-cnn.js';

const SIZE = 32;
const PER = 3 * SIZE * SIZE;
const tinySource = (file: string) => tinySourceOf(file, SIZE);

function images(count: number, seed: number) {
  const data = tinyInputs(count, SIZE, seed);
  return Array.from({ length: count }, (_, i) => ({
    id: `img${seed}-${i}`,
    pixels: data.slice(i * PER, (i + 1) * PER),
  }));
}

describe('ensureInt8Model', () => {
  it('saves the quantised model with its calibration provenance, reuses it, and rebuilds when calibration or file change', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'models/tiny.onnx'), { size: SIZE });
    const cacheDir = path.join(dir, 'cache');
    const source = await tinySource(file);
    const calibration = pixelCalibrationSource(images(8, 1), { height: SIZE, width: SIZE });
    const logs: string[] = [];
    const first = await ensureInt8Model(source, calibration, { cacheDir, log: (l) => logs.push(l) });
    assert.ok(!('unsupported' in first));
    assert.equal(first.reused, false);
    assert.equal(first.fusion.fused, true);
    // Derived models go to featcache's cache folder, under the model's sha256; nothing appears beside the model.
    assert.equal(path.dirname(first.file), path.join(cacheDir, 'models', source.sha256));
    assert.deepEqual(await fs.readdir(path.dirname(file)), ['tiny.onnx']);
    assert.equal(first.file, int8Paths(source, first.calibrationHash, undefined, cacheDir).model);
    const provenance = JSON.parse(await fs.readFile(`${first.file}.json`, 'utf8'));
    assert.equal(provenance.calibrationHash, first.calibrationHash);
    assert.equal(provenance.source.sha256, source.sha256);
    assert.deepEqual(
      provenance.calibration.images.map((i: { id: string }) => i.id),
      calibration.images.map((i) => i.id),
    );
    assert.equal(provenance.calibration.method, 'mse');
    assert.ok(provenance.ranges.input.max > provenance.ranges.input.min);
    assert.equal(provenance.ranges['/relu/Relu_output_0'].zeroPoint, 0);
    assert.equal(logs.length, 1);
    const mtime = (await fs.stat(first.file)).mtimeMs;

    // Same images: the saved model is used as is (not rewritten, nothing calibrated).
    const again = await ensureInt8Model(source, pixelCalibrationSource(images(8, 1), { height: SIZE, width: SIZE }), {
      cacheDir,
      log: (l) => logs.push(l),
    });
    assert.ok(!('unsupported' in again));
    assert.equal(again.reused, true);
    assert.equal(again.calibrationHash, first.calibrationHash);
    assert.equal((await fs.stat(first.file)).mtimeMs, mtime);
    assert.equal(logs.length, 1);
    // By hash alone (what a head or a cache records).
    assert.equal((await savedInt8Model(source, first.calibrationHash, undefined, cacheDir))?.sha256, first.sha256);

    // One image different: another calibration, another file, the first one kept.
    const changed = images(8, 1);
    changed[3] = images(1, 42)[0]!;
    const other = await ensureInt8Model(source, pixelCalibrationSource(changed, { height: SIZE, width: SIZE }), {
      cacheDir,
    });
    assert.ok(!('unsupported' in other));
    assert.equal(other.reused, false);
    assert.notEqual(other.calibrationHash, first.calibrationHash);
    assert.ok(await fs.stat(first.file));
    // Other range methods are other calibrations too.
    const pct = await ensureInt8Model(source, calibration, { cacheDir, calibrationRanges: 'minmax' });
    assert.ok(!('unsupported' in pct));
    assert.notEqual(pct.calibrationHash, first.calibrationHash);

    // A damaged saved model is rebuilt, never trusted.
    await fs.writeFile(first.file, 'garbage');
    const rebuilt = await ensureInt8Model(source, calibration, { cacheDir });
    assert.ok(!('unsupported' in rebuilt));
    assert.equal(rebuilt.reused, false);
    assert.equal(rebuilt.sha256, first.sha256);
  });

  it('says where it could not save, naming the option', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'tiny.onnx'), { size: SIZE });
    const blocker = path.join(dir, 'not-a-dir');
    await fs.writeFile(blocker, '');
    await assert.rejects(
      ensureInt8Model(await tinySource(file), pixelCalibrationSource(images(2, 1), { height: SIZE, width: SIZE }), {
        int8Dir: blocker,
      }),
      /^FeatcacheError: int8: cannot save the quantised model as .*not-a-dir.* \(E[A-Z]+\); pass a writable directory for it with int8Dir$/,
    );
  });

  it('rejects bad options by name', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'tiny.onnx'), { size: SIZE });
    const calibration = pixelCalibrationSource(images(2, 1), { height: SIZE, width: SIZE });
    await assert.rejects(
      ensureInt8Model(await tinySource(file), calibration, { calibrate: 0 }),
      /^FeatcacheError: calibrate: expected a positive integer/,
    );
    await assert.rejects(
      ensureInt8Model(await tinySource(file), calibration, { calibrationRanges: 'entropy' as 'minmax' }),
      /calibrationRanges: expected one of "minmax", "percentile", "mse", got "entropy"/,
    );
    await assert.rejects(
      ensureInt8Model(await tinySource(file), calibration, {
        calibrationRanges: 'percentile',
        calibrationPercentile: 30,
      }),
      /calibrationPercentile: expected a number in \(50, 100\]/,
    );
  });
});

describe('openBackbone with int8', () => {
  it('runs the fused int8 model, identified by its calibration, with features close to FP32', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'tiny.onnx'), { size: SIZE });
    const calibration = async () => pixelCalibrationSource(images(8, 1), { height: SIZE, width: SIZE });
    const int8 = await openBackbone(file, { device: { kind: 'cpu' }, threads: 1, int8: { calibration } });
    const fp32 = await openBackbone(file, { device: { kind: 'cpu' }, threads: 1 });
    try {
      assert.equal(int8.precision, 'int8');
      assert.equal(int8.int8Fallback, null);
      assert.equal(int8.sha256, fp32.sha256);
      assert.equal(int8.dim, TINY_CNN_DIM);
      assert.match(int8.int8!.calibrationHash, /^[0-9a-f]{64}$/);
      assert.equal(fp32.precision, 'fp32');
      const test = tinyInputs(16, SIZE, 77);
      const a = await fp32.extract(test.slice(), 16, SIZE);
      const b = await int8.extract(test.slice(), 16, SIZE);
      const fidelity = featureFidelity(a, b, 16, TINY_CNN_DIM);
      assert.ok(fidelity.centredCosine.median > 0.95, JSON.stringify(fidelity));
      assert.ok(
        a.some((v, i) => v !== b[i]),
        'int8 features are not bit-identical to FP32 ones',
      );
    } finally {
      await int8.close();
      await fp32.close();
    }
    // A head that recorded the hash gets the same model back without calibration images.
    const again = await openBackbone(file, {
      device: { kind: 'cpu' },
      threads: 1,
      int8: { calibrationHash: await ensureHash(file, calibration) },
    });
    assert.equal(again.precision, 'int8');
    await again.close();
    await assert.rejects(
      openBackbone(file, { device: { kind: 'cpu' }, threads: 1, int8: { calibrationHash: 'f'.repeat(64) } }),
      /^FeatcacheError: int8: the int8 model calibrated as ffffffffffff… is missing or damaged \(expected .*\/models\/[0-9a-f]{64}\/int8-ffffffffffffffff\.onnx\); re-run 'featcache extract --int8'/,
    );
  });

  it('falls back to FP32 with the reason when the model is outside the recipe', async () => {
    const dir = await tempDir();
    const file = await writeTinyModel(path.join(dir, 'reduce.onnx'), { pool: 'ReduceMean13', size: SIZE });
    const logs: string[] = [];
    const backbone = await openBackbone(file, {
      device: { kind: 'cpu' },
      threads: 1,
      log: (l) => logs.push(l),
      int8: { calibration: async () => pixelCalibrationSource(images(2, 1), { height: SIZE, width: SIZE }) },
    });
    await backbone.close();
    assert.equal(backbone.precision, 'fp32');
    assert.equal(backbone.int8, null);
    assert.match(backbone.int8Fallback!, /^unsupported ops ReduceMean/);
    assert.deepEqual(logs, [`int8: not used — ${backbone.int8Fallback}; running FP32`]);
    // A model with no Conv at all has nothing to gain: also FP32.
    const plain = await openBackbone(await writeTinyModel(path.join(dir, 'gap.onnx'), { size: SIZE }), {
      device: { kind: 'cpu' },
      threads: 1,
      int8: { calibration: async () => pixelCalibrationSource(images(2, 1), { height: SIZE, width: SIZE }) },
    });
    await plain.close();
    assert.equal(plain.precision, 'fp32');
    assert.match(plain.int8Fallback!, /no Conv to run in int8/);
  });

  it('refuses --int8 with --fp16 or a CUDA device', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'tiny.onnx'), { size: SIZE });
    const int8 = { calibration: async () => pixelCalibrationSource(images(2, 1), { height: SIZE, width: SIZE }) };
    await assert.rejects(
      openBackbone(file, { device: { kind: 'cpu' }, threads: 1, fp16: true, int8 }),
      /^FeatcacheError: int8: cannot be combined with fp16 /,
    );
    await assert.rejects(
      openBackbone(file, { device: { kind: 'cuda', deviceId: 0 }, threads: 1, int8 }),
      /^FeatcacheError: int8: the int8 backbone runs on the CPU; drop device cuda:0 or use fp16 on a GPU$/,
    );
  });
});

async function ensureHash(
  file: string,
  calibration: () => Promise<ReturnType<typeof pixelCalibrationSource>>,
): Promise<string> {
  const result = await ensureInt8Model(await tinySource(file), await calibration());
  assert.ok(!('unsupported' in result));
  return result.calibrationHash;
}

describe('int8 feature identity', () => {
  it('a head refuses features of another precision or calibration, saying why', () => {
    const int8 = { precision: 'int8' as const, calibrationHash: 'a'.repeat(64) };
    checkFeaturePrecision('--head h', int8, { ...int8 });
    checkFeaturePrecision('--head h', { precision: 'fp32' }, {});
    assert.throws(
      () => checkFeaturePrecision('--head h', int8, { precision: 'fp32' }),
      (e: Error) =>
        e instanceof FeatcacheError &&
        /^--head h: was trained on int8 features \(calibration aaaaaaaaaaaa…\) but is given fp32 features; int8 and float features .* are not interchangeable — use the int8 backbone it was trained with/.test(
          e.message,
        ),
    );
    assert.throws(
      () => checkFeaturePrecision('--head h', { precision: 'fp32' }, int8),
      /trained on fp32 features but is given int8 features .* run without int8 or train a head/,
    );
    assert.throws(
      () => checkFeaturePrecision('--head h', int8, { precision: 'int8', calibrationHash: 'b'.repeat(64) }),
      /given int8 features \(calibration bbbbbbbbbbbb…\)/,
    );
  });

  it('a cache refuses to mix int8 rows with FP32 rows or with another calibration', () => {
    const base = { modelSha256: 'm', tappedTensor: 't', preset: { name: 'p' }, exif: 'ignore', icc: 'ignore' };
    assert.deepEqual(
      identityDifferences(
        { ...base, precision: 'int8', calibrationHash: 'c1' },
        { ...base, precision: 'int8', calibrationHash: 'c1' },
      ),
      [],
    );
    assert.match(
      identityDifferences({ ...base }, { ...base, precision: 'int8', calibrationHash: 'c1' }).join(),
      /precision fp32 vs int8 \(int8 features are not interchangeable with float ones\)/,
    );
    assert.match(
      identityDifferences(
        { ...base, precision: 'int8', calibrationHash: 'c1' },
        { ...base, precision: 'int8', calibrationHash: 'c2' },
      ).join(),
      /int8 calibration c1… vs c2… \(a different calibration quantises differently\)/,
    );
  });
});
