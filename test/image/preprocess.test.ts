import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import {
  centreCropOffsets,
  cropGeometry,
  decodeToRgb,
  preprocess,
  resizedSize,
  roundHalfEven,
  writeNormalised,
} from '../../src/image/preprocess.js';
import { DEFAULT_IMAGE_POLICY, PRESETS, PRESET_NAMES, getPreset } from '../../src/image/presets.js';
import { needsShared, pngBomb, readFloat32, resnetDir, sharedDir } from '../support/helpers.js';

const torchvision = getPreset('torchvision');
const policy = DEFAULT_IMAGE_POLICY;

function gradient(width: number, height: number): Buffer {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      data[o] = (x * 255) / width;
      data[o + 1] = (y * 255) / height;
      data[o + 2] = ((x + y) * 97) % 256;
    }
  return data;
}

const raw = (width: number, height: number) => sharp(gradient(width, height), { raw: { width, height, channels: 3 } });

describe('presets', () => {
  it('are frozen data with the documented names', () => {
    assert.deepEqual([...PRESET_NAMES].sort(), ['caffe', 'inception', 'torchvision', 'torchvision-v2']);
    assert.ok(Object.isFrozen(PRESETS) && Object.isFrozen(PRESETS.torchvision));
    assert.equal(getPreset('torchvision-v2').resizeShorter, 232);
    assert.throws(
      () => getPreset('imagenet'),
      /^FeatcacheError: preset: expected one of "torchvision", "torchvision-v2", "caffe", "inception", got "imagenet"/,
    );
  });

  it('normalise as documented: caffe is BGR minus means, inception is [-1, 1]', () => {
    const crop = 224 * 224;
    const rgb = new Uint8Array(crop * 3);
    for (let p = 0; p < crop; p++) rgb.set([10, 20, 30], p * 3);
    const out = new Float32Array(crop * 3);
    writeNormalised(rgb, getPreset('caffe'), 'NCHW', out, 0);
    assert.ok(Math.abs(out[0]! - (30 - 103.939)) < 1e-4);
    assert.ok(Math.abs(out[2 * crop]! - (10 - 123.68)) < 1e-4);
    const inception = getPreset('inception');
    const big = new Uint8Array(299 * 299 * 3).fill(255);
    const o2 = new Float32Array(299 * 299 * 3);
    writeNormalised(big, inception, 'NHWC', o2, 0);
    assert.ok(o2.every((v) => Math.abs(v - 1) < 1e-6));
    writeNormalised(rgb, torchvision, 'NHWC', out, 0);
    assert.ok(Math.abs(out[1]! - (20 / 255 - 0.456) / 0.224) < 1e-5, 'NHWC interleaves channels');
  });
});

describe('writeNormalised', () => {
  it('fills exactly its slot of a batch buffer, in either layout', () => {
    const preset = { ...torchvision, crop: 4 };
    const pixels = 16;
    const rgb = Uint8Array.from({ length: pixels * 3 }, (_, i) => (i * 37) % 256);
    for (const layout of ['NCHW', 'NHWC'] as const) {
      const sentinel = -77;
      const out = new Float32Array(3 * pixels * 3).fill(sentinel);
      writeNormalised(rgb, preset, layout, out, 1);
      const slot = out.subarray(pixels * 3, 2 * pixels * 3);
      assert.ok(
        out.subarray(0, pixels * 3).every((v) => v === sentinel) &&
          out.subarray(2 * pixels * 3).every((v) => v === sentinel),
        `${layout}: other slots untouched`,
      );
      for (let p = 0; p < pixels; p++) {
        for (let c = 0; c < 3; c++) {
          const expected = (rgb[p * 3 + c]! / 255 - [0.485, 0.456, 0.406][c]!) / [0.229, 0.224, 0.225][c]!;
          const got = layout === 'NCHW' ? slot[c * pixels + p]! : slot[p * 3 + c]!;
          assert.ok(Math.abs(got - expected) < 1e-5, `${layout} pixel ${p} channel ${c}: ${got} vs ${expected}`);
        }
      }
    }
  });
});

describe('preprocess', () => {
  it('returns one crop × crop × 3 tensor: the decoded crop, normalised', async () => {
    const png = await raw(300, 260).png().toBuffer();
    const got = await preprocess(png, torchvision, policy, 'NCHW');
    assert.equal(got.length, 3 * 224 * 224);
    const expected = new Float32Array(3 * 224 * 224);
    writeNormalised(await decodeToRgb(png, torchvision, policy), torchvision, 'NCHW', expected, 0);
    assert.deepEqual(got, expected);
  });
});

describe('torchvision geometry', () => {
  it('rounds half to even like Python', () => {
    // Python: [round(x) for x in (0.5, 1.5, 2.5, 3.5, 4.5, -0.5, -1.5, -2.5, 3.2, 3.7, -3.7, 7)]
    assert.deepEqual(
      [0.5, 1.5, 2.5, 3.5, 4.5, -0.5, -1.5, -2.5, 3.2, 3.7, -3.7, 7].map(roundHalfEven),
      [0, 2, 2, 4, 4, -0, -2, -2, 3, 4, -4, 7],
    );
  });
  it('resizes like torchvision.transforms.Resize(int) on portrait, landscape and square images', () => {
    // torchvision: the short side becomes `size`, the long side is int(size * long / short) (truncated).
    assert.deepEqual(resizedSize(640, 427, 256), { width: 383, height: 256 });
    assert.deepEqual(resizedSize(427, 640, 256), { width: 256, height: 383 });
    assert.deepEqual(resizedSize(300, 300, 232), { width: 232, height: 232 });
    assert.deepEqual(resizedSize(1000, 999, 256), { width: 256, height: 256 });
    assert.deepEqual(resizedSize(100, 1000, 224), { width: 224, height: 2240 });
  });
  it('centres the crop with Python rounding on both axes', () => {
    assert.deepEqual(centreCropOffsets(256, 383, 224), { left: 16, top: 80 });
    assert.deepEqual(centreCropOffsets(224, 224, 224), { left: 0, top: 0 });
    assert.deepEqual(centreCropOffsets(227, 229, 224), { left: 2, top: 2 });
    assert.deepEqual(centreCropOffsets(300, 225, 224), { left: 38, top: 0 });
  });
  it('truncates the long side and centres the crop', () => {
    assert.deepEqual(resizedSize(500, 333, 256), { width: 384, height: 256 });
    assert.deepEqual(resizedSize(333, 500, 256), { width: 256, height: 384 });
    assert.deepEqual(centreCropOffsets(385, 256, 224), { left: 80, top: 16 });
    assert.deepEqual(centreCropOffsets(383, 256, 224), { left: 80, top: 16 });
  });
  it('cropGeometry: the resized size and the centred crop window, and a crop that does not fit refused', () => {
    const preset = { resizeShorter: 256, crop: 224 };
    assert.deepEqual(cropGeometry(500, 333, preset), {
      target: { width: 384, height: 256 },
      window: { left: 80, top: 16, width: 224, height: 224 },
    });
    assert.deepEqual(cropGeometry(333, 500, preset).window, { left: 16, top: 80, width: 224, height: 224 });
    assert.throws(
      () => cropGeometry(300, 400, { resizeShorter: 223, crop: 224 }),
      /^Error: resized to 223×297, smaller/,
    );
  });
});

describe('decoding', () => {
  it('turns grey, alpha, palette, CMYK and 16-bit images into 3-channel 8-bit crops', async () => {
    const inputs: Record<string, Buffer> = {
      grey: await raw(300, 260).greyscale().png().toBuffer(),
      rgba: await raw(300, 260).ensureAlpha(0.5).png().toBuffer(),
      palette: await raw(300, 260).png({ palette: true, colours: 16 }).toBuffer(),
      cmyk: await raw(300, 260).toColourspace('cmyk').jpeg().toBuffer(),
      rgb16: await raw(300, 260).toColourspace('rgb16').png().toBuffer(),
      gif: await raw(300, 260).gif().toBuffer(),
      webp: await raw(300, 260).webp({ lossless: true }).toBuffer(),
      tiff: await raw(300, 260).tiff({ compression: 'lzw' }).toBuffer(),
    };
    assert.equal((await sharp(inputs.rgb16).metadata()).depth, 'ushort');
    assert.equal((await sharp(inputs.cmyk).metadata()).space, 'cmyk');
    const reference = await decodeToRgb(await raw(300, 260).png().toBuffer(), torchvision, policy);
    for (const [name, input] of Object.entries(inputs)) {
      const rgb = await decodeToRgb(input, torchvision, policy);
      assert.equal(rgb.length, 224 * 224 * 3, name);
      if (name === 'grey') {
        for (let p = 0; p < 100; p++)
          assert.ok(rgb[p * 3] === rgb[p * 3 + 1] && rgb[p * 3 + 1] === rgb[p * 3 + 2], 'grey is replicated');
      }
      if (['rgba', 'rgb16', 'webp', 'tiff'].includes(name)) {
        let diff = 0;
        for (let i = 0; i < rgb.length; i++) diff += Math.abs(rgb[i]! - reference[i]!);
        assert.ok(diff / rgb.length < 3, `${name} keeps the colours (mean diff ${diff / rgb.length})`);
      }
    }
  });

  it('EXIF orientation: "ignore" decodes stored pixels, "apply" rotates upright', async () => {
    const stored = await raw(400, 300).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
    const uprightFile = await raw(400, 300).rotate(90).jpeg({ quality: 100 }).toBuffer();
    const plainFile = await raw(400, 300).jpeg({ quality: 100 }).toBuffer();
    const meanDiff = (a: Buffer, b: Buffer) => a.reduce((s, v, i) => s + Math.abs(v - b[i]!), 0) / a.length;
    const ignored = await decodeToRgb(stored, torchvision, { ...policy, exif: 'ignore' });
    const applied = await decodeToRgb(stored, torchvision, { ...policy, exif: 'apply' });
    assert.ok(meanDiff(ignored, await decodeToRgb(plainFile, torchvision, policy)) < 2, 'ignore = as stored');
    assert.ok(meanDiff(applied, await decodeToRgb(uprightFile, torchvision, policy)) < 2, 'apply = rotated');
    assert.ok(meanDiff(applied, ignored) > 10, 'the two policies differ');
  });

  it('EXIF orientations 2–8: "apply" equals decoding the upright image, and 5–8 swap width and height', async () => {
    const meanDiff = (a: Buffer, b: Buffer) => a.reduce((s, v, i) => s + Math.abs(v - b[i]!), 0) / a.length;
    const plain = await decodeToRgb(await raw(400, 260).jpeg({ quality: 100 }).toBuffer(), torchvision, policy);
    for (const orientation of [2, 3, 4, 5, 6, 7, 8]) {
      const stored = await raw(400, 260).jpeg({ quality: 100 }).withMetadata({ orientation }).toBuffer();
      const upright = await sharp(stored).rotate().jpeg({ quality: 100 }).toBuffer();
      assert.equal(
        (await sharp(upright).metadata()).width,
        orientation >= 5 ? 260 : 400,
        `fixture: orientation ${orientation}`,
      );
      const applied = await decodeToRgb(stored, torchvision, { ...policy, exif: 'apply' });
      assert.ok(
        meanDiff(applied, await decodeToRgb(upright, torchvision, policy)) < 2,
        `orientation ${orientation}: apply = upright`,
      );
      assert.ok(meanDiff(applied, plain) > 10, `orientation ${orientation}: apply changes the pixels`);
      assert.ok(
        meanDiff(await decodeToRgb(stored, torchvision, policy), plain) < 2,
        `orientation ${orientation}: ignore = as stored`,
      );
    }
  });

  it('ICC: "ignore" reads stored values as sRGB (like PIL), "convert" converts to sRGB first', async () => {
    // Saturated colours, which a Display P3 profile stores as clearly different numbers.
    const width = 300;
    const height = 240;
    const pixels = Buffer.alloc(width * height * 3);
    for (let p = 0; p < width * height; p++)
      pixels.set(
        [
          [250, 10, 10],
          [10, 240, 20],
          [20, 30, 230],
        ][Math.floor((p % width) / 100)]!,
        p * 3,
      );
    const srgb = sharp(pixels, { raw: { width, height, channels: 3 } });
    const tagged = await srgb.clone().withIccProfile('p3').png().toBuffer();
    assert.ok((await sharp(tagged).metadata()).icc, 'fixture: the PNG carries a profile');
    const meanDiff = (a: Buffer, b: Buffer) => a.reduce((s, v, i) => s + Math.abs(v - b[i]!), 0) / a.length;
    const original = await decodeToRgb(await srgb.clone().png().toBuffer(), torchvision, policy);
    const converted = await decodeToRgb(tagged, torchvision, { ...policy, icc: 'convert' });
    const ignored = await decodeToRgb(tagged, torchvision, { ...policy, icc: 'ignore' });
    assert.ok(
      meanDiff(converted, original) < 3,
      `convert recovers the sRGB colours (mean diff ${meanDiff(converted, original)})`,
    );
    assert.ok(
      meanDiff(ignored, original) > 5,
      `ignore keeps the stored P3 numbers (mean diff ${meanDiff(ignored, original)})`,
    );
  });

  it('refuses a tiny file declaring a huge image by the pixel limit', async () => {
    const png = pngBomb(60000, 60000);
    assert.ok(png.length < 2_000);
    await assert.rejects(decodeToRgb(png, torchvision, policy), /pixel limit/i);
  });

  it('refuses a preset whose crop is larger than its resize, naming both sizes', async () => {
    const png = await raw(400, 300).png().toBuffer();
    const tooBig = { ...torchvision, resizeShorter: 223, crop: 224 };
    await assert.rejects(
      decodeToRgb(png, tooBig, policy),
      /^Error: resized to 297×223, smaller than the 224×224 crop$/,
    );
  });

  it('rejects truncated and non-image data', async () => {
    const jpeg = await raw(300, 200).jpeg().toBuffer();
    await assert.rejects(decodeToRgb(jpeg.subarray(0, jpeg.length / 2), torchvision, policy));
    await assert.rejects(
      decodeToRgb(Buffer.from('just some text, not a jpeg'), torchvision, policy),
      /unsupported image format/i,
    );
  });
});

const needsFixture = { skip: needsShared(path.join(resnetDir, 'manifest.json')) };

describe('fidelity to torchvision', () => {
  it('matches input_K.bin to a mean absolute difference <= 0.006 on every fixture image', needsFixture, async () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(resnetDir, 'manifest.json'), 'utf8'));
    const diffs: number[] = [];
    for (const item of manifest.items) {
      const expected = readFloat32(path.join(resnetDir, item.input.file));
      const got = await preprocess(path.join(sharedDir, 'data', item.image), torchvision, policy, 'NCHW');
      let sum = 0;
      for (let i = 0; i < got.length; i++) sum += Math.abs(got[i]! - expected[i]!);
      diffs.push(sum / got.length);
    }
    assert.ok(Math.max(...diffs) <= 0.006, `mean abs diffs ${diffs.map((d) => d.toFixed(4)).join(', ')}`);
  });

  it('lanczos3 (sharp default) would not meet the bar — the kernel choice matters', needsFixture, async () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(resnetDir, 'manifest.json'), 'utf8'));
    const item = manifest.items[0];
    const expected = readFloat32(path.join(resnetDir, item.input.file));
    const got = await preprocess(
      path.join(sharedDir, 'data', item.image),
      { ...torchvision, kernel: 'lanczos3' },
      policy,
      'NCHW',
    );
    let sum = 0;
    for (let i = 0; i < got.length; i++) sum += Math.abs(got[i]! - expected[i]!);
    const linear = await preprocess(path.join(sharedDir, 'data', item.image), torchvision, policy, 'NCHW');
    let sumLinear = 0;
    for (let i = 0; i < got.length; i++) sumLinear += Math.abs(linear[i]! - expected[i]!);
    assert.ok(sum > sumLinear, `lanczos3 ${sum / got.length} vs linear ${sumLinear / got.length}`);
  });
});
