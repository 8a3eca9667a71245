/**
 * A dataset's calibration sample names its images from their bytes before decoding any, so a warm `extract --int8`
 * finds its saved model without decoding 32 images; decoding happens only when a model must be built, and an image
 * that does not decode is then replaced by the next one of the shuffle.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { type CalibrationSource, datasetCalibrationSource } from '../../src/backbone/calibration-source.js';
import { calibrationHash, ensureInt8Model } from '../../src/backbone/int8.js';
import { DEFAULT_INT8_OPTIONS } from '../../src/backbone/int8-defaults.js';
import { DEFAULT_IMAGE_POLICY, getPreset } from '../../src/image/presets.js';
import { sha256Bytes } from '../../src/util/fsx.js';
import { seededRandom } from '../../src/util/random.js';
import { tempDir } from '../support/helpers.js';
import { tinySource, writeTinyCnn } from '../support/tiny-cnn.js';

const SIZE = 32;
const preset = { ...getPreset('torchvision'), resizeShorter: SIZE, crop: SIZE };
const options = { count: 5, seed: 0, preset, policy: DEFAULT_IMAGE_POLICY };

async function jpeg(seed: number): Promise<Buffer> {
  const random = seededRandom(seed);
  const raw = Buffer.from(Array.from({ length: 40 * 40 * 3 }, () => Math.floor(random() * 256)));
  return sharp(raw, { raw: { width: 40, height: 40, channels: 3 } })
    .jpeg()
    .toBuffer();
}

/** Eight images in memory (`broken` paths hold bytes that are no image), counting reads. */
async function dataset(broken: string[] = []) {
  const files = new Map<string, Buffer>();
  for (let i = 0; i < 8; i++) {
    const name = `img${i}.jpg`;
    files.set(name, broken.includes(name) ? Buffer.from('not an image') : await jpeg(i));
  }
  const counter = { reads: 0 };
  const items = [...files.keys()].map((p) => ({ path: p, label: 0 }));
  const source = {
    read: async (item: { path: string }) => {
      counter.reads++;
      return { bytes: files.get(item.path)!, stamp: { size: files.get(item.path)!.length, mtimeMs: 0 } };
    },
    stamp: async () => null,
  };
  return { sample: { items, source } as unknown as Parameters<typeof datasetCalibrationSource>[0], files, counter };
}

const ids = (c: CalibrationSource) => c.images.map((i) => i.id);

describe('datasetCalibrationSource', () => {
  it('names `count` images by the sha256 of their bytes without decoding; decoding is deferred to decoded()', async () => {
    const all = ['0', '1', '2', '3', '4', '5', '6', '7'].map((i) => `img${i}.jpg`);
    const { sample, files } = await dataset(all);
    const source = await datasetCalibrationSource(sample, options);
    assert.equal(source.images.length, 5);
    for (const image of source.images) assert.equal(image.sha256, sha256Bytes(files.get(image.id)!));
    await assert.rejects(
      source.decoded!(),
      /calibrate: expected at least one decodable image in the dataset, got "none of 8"/,
    );
  });

  it('decoded() replaces an image that does not decode by the next one of the same shuffle', async () => {
    const good = await datasetCalibrationSource((await dataset()).sample, options);
    const bad = ids(good)[0]!;
    const { sample } = await dataset([bad]);
    const named = await datasetCalibrationSource(sample, options);
    assert.deepEqual(ids(named), ids(good), 'named before decoding: the same images as with every image intact');
    const decoded = await named.decoded!();
    assert.ok(!ids(decoded).includes(bad));
    assert.deepEqual(ids(decoded).slice(0, 4), ids(good).slice(1));
    assert.equal(decoded.images.length, 5);
    const intactDecoded = await good.decoded!();
    assert.deepEqual(ids(intactDecoded), ids(good), 'all intact: decoding names the same images');
  });
});

describe('ensureInt8Model with a dataset sample', () => {
  it('reuses a saved model from the named images alone, and after decoding when one of them does not decode', async () => {
    const dir = await tempDir();
    const file = await writeTinyCnn(path.join(dir, 'tiny.onnx'), { size: SIZE });
    const cacheDir = path.join(dir, 'cache');
    const source = await tinySource(file, SIZE);

    const intact = await dataset();
    const built = await ensureInt8Model(source, await datasetCalibrationSource(intact.sample, options), { cacheDir });
    assert.ok(!('unsupported' in built) && !built.reused);
    assert.equal(intact.counter.reads, 5, 'decoding reuses the bytes read to name the images (a URL is fetched once)');
    // A pixel limit of one makes every decode fail, and it is not part of the calibration's identity: the model is
    // found without decoding, or this would throw "none of 8" decodable.
    const undecodable = { ...options, policy: { ...DEFAULT_IMAGE_POLICY, maxPixels: 1 } };
    await assert.rejects((await datasetCalibrationSource(intact.sample, undecodable)).decoded!(), /none of 8/);
    const again = await ensureInt8Model(source, await datasetCalibrationSource(intact.sample, undecodable), {
      cacheDir,
    });
    assert.ok(!('unsupported' in again) && again.reused);
    assert.equal(again.calibrationHash, built.calibrationHash);

    const firstName = ids(await datasetCalibrationSource(intact.sample, options))[0]!;
    const damaged = await dataset([firstName]);
    const rebuilt = await ensureInt8Model(source, await datasetCalibrationSource(damaged.sample, options), {
      cacheDir,
    });
    assert.ok(!('unsupported' in rebuilt) && !rebuilt.reused);
    const decoded = await (await datasetCalibrationSource(damaged.sample, options)).decoded!();
    const expected = calibrationHash({ sha256: source.sha256, tappedTensor: source.tap.tensor }, decoded, {
      ...DEFAULT_INT8_OPTIONS,
    });
    assert.equal(rebuilt.calibrationHash, expected, 'keyed by the images calibration really used');
    assert.ok(!rebuilt.provenance.calibration.images.some((i) => i.id === firstName));
    const reusedDamaged = await ensureInt8Model(source, await datasetCalibrationSource(damaged.sample, options), {
      cacheDir,
    });
    assert.ok(!('unsupported' in reusedDamaged) && reusedDamaged.reused);
    assert.equal(reusedDamaged.calibrationHash, expected);
  });
});
