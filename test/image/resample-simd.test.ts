/**
 * The resize's WebAssembly SIMD passes against its JavaScript passes, byte for byte: the JavaScript passes are the
 * reference (test/image/resample.test.ts holds both to Pillow's own bytes), the WebAssembly ones are what extract,
 * predict and serve run.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import fg from 'fast-glob';
import sharp from 'sharp';
import { cropGeometry } from '../../src/image/preprocess.js';
import { getPreset } from '../../src/image/presets.js';
import { resizeBilinearWindow, resizeBilinearWindowJs } from '../../src/image/resample.js';
import { resampleEngine } from '../../src/image/resample-simd.js';
import { seededRandom } from '../../src/util/random.js';
import { hymenoptera, needsShared, repoRoot, tempDir } from '../support/helpers.js';

type Window = { left: number; top: number; width: number; height: number };

function randomImage(width: number, height: number, seed: number): Uint8Array {
  const random = seededRandom(seed);
  return Uint8Array.from({ length: width * height * 3 }, () => Math.floor(random() * 256));
}

function assertSameBytes(
  src: Uint8Array,
  width: number,
  height: number,
  out: { width: number; height: number },
  window: Window,
): void {
  const simd = resizeBilinearWindow(src, width, height, 3, out, window);
  const js = resizeBilinearWindowJs(src, width, height, 3, out, window);
  assert.equal(simd.length, js.length);
  const first = simd.findIndex((b, i) => b !== js[i]);
  assert.equal(
    first,
    -1,
    `${width}×${height} → ${out.width}×${out.height} window ${JSON.stringify(window)}: byte ${first} differs`,
  );
}

describe('resize in WebAssembly SIMD', () => {
  it('is the engine this build uses', () => {
    assert.equal(resampleEngine().engine, 'wasm-simd', JSON.stringify(resampleEngine()));
  });

  it('gives the JavaScript passes’ bytes: reductions up to 12×, enlargements, one axis only, odd windows', () => {
    const cases: [number, number, number, number, Window | undefined][] = [
      [500, 375, 341, 256, { left: 58, top: 16, width: 224, height: 224 }],
      [375, 500, 256, 341, { left: 16, top: 58, width: 224, height: 224 }],
      [3000, 2000, 384, 256, { left: 80, top: 16, width: 224, height: 224 }],
      [97, 61, 300, 211, undefined],
      [256, 400, 256, 400, undefined],
      [256, 400, 256, 300, { left: 13, top: 7, width: 229, height: 231 }],
      [640, 256, 480, 256, { left: 3, top: 0, width: 17, height: 256 }],
      [33, 1, 5, 1, undefined],
      [1, 40, 1, 7, undefined],
      [2, 2, 1, 1, undefined],
    ];
    for (const [i, [w, h, ow, oh, window]] of cases.entries()) {
      assertSameBytes(
        randomImage(w, h, i + 1),
        w,
        h,
        { width: ow, height: oh },
        window ?? { left: 0, top: 0, width: ow, height: oh },
      );
    }
  });

  it('extreme pixels: all 0 and all 255 stay 0 and 255 (the saturating narrow is Pillow’s clip8)', () => {
    for (const value of [0, 255]) {
      const src = new Uint8Array(123 * 77 * 3).fill(value);
      const out = resizeBilinearWindow(
        src,
        123,
        77,
        3,
        { width: 50, height: 31 },
        { left: 0, top: 0, width: 50, height: 31 },
      );
      assert.ok(out.every((b) => b === value));
    }
  });

  it('a 48-megapixel photo gives the same bytes, passed through a few MB of WebAssembly memory', () => {
    const [w, h] = [8000, 6000];
    const src = new Uint8Array(w * h * 3);
    for (let i = 0; i < src.length; i++) src[i] = (Math.imul(i, 2654435761) >>> 24) ^ (i % 251);
    const { target, window } = cropGeometry(w, h, getPreset('torchvision'));
    assertSameBytes(src, w, h, target, window);
    // The crop needs ~5,300 of the 6,000 source rows (127 MB); they go in 4 MB at a time.
    const after = resampleEngine();
    assert.ok(after.engine === 'wasm-simd' && after.memoryBytes < 16 * 1024 * 1024, JSON.stringify(after));
  });

  it('refuses a window outside the output, in both engines', () => {
    const src = randomImage(40, 30, 3);
    for (const resize of [resizeBilinearWindow, resizeBilinearWindowJs])
      for (const window of [
        { left: 0, top: 1, width: 20, height: 20 },
        { left: -1, top: 0, width: 5, height: 5 },
        { left: 16, top: 0, width: 5, height: 5 },
      ])
        assert.throws(
          () => resize(src, 40, 30, 3, { width: 20, height: 20 }, window),
          /^RangeError: resize window \d+×\d+ at \(-?\d+, \d+\) is not inside the 20×20 output$/,
        );
  });

  it('falls back to the JavaScript passes, saying why, when the .wasm file is missing', async () => {
    const dir = await tempDir();
    for (const file of ['resample.js', 'resample-simd.js'])
      await fs.copyFile(path.join(repoRoot, 'dist/src/image', file), path.join(dir, file));
    const copy = (await import(
      pathToFileURL(path.join(dir, 'resample.js')).href
    )) as typeof import('../../src/image/resample.js');
    const simd = (await import(
      pathToFileURL(path.join(dir, 'resample-simd.js')).href
    )) as typeof import('../../src/image/resample-simd.js');
    const src = randomImage(90, 70, 5);
    const window = { left: 4, top: 2, width: 40, height: 30 };
    assert.deepEqual(
      copy.resizeBilinearWindow(src, 90, 70, 3, { width: 50, height: 38 }, window),
      resizeBilinearWindowJs(src, 90, 70, 3, { width: 50, height: 38 }, window),
    );
    const engine = simd.resampleEngine();
    assert.equal(engine.engine, 'js');
    assert.match('reason' in engine ? engine.reason : '', /simd\/resample\.wasm/);
    await fs.rm(dir, { recursive: true });
  });

  it(
    'every hymenoptera image: the same crop bytes as the JavaScript passes',
    { skip: needsShared(hymenoptera) },
    async () => {
      const files = (await fg('*/*/*.jpg', { cwd: hymenoptera, absolute: true })).sort();
      assert.ok(files.length > 300);
      for (const file of files) {
        const { data, info } = await sharp(file, { ignoreIcc: true })
          .removeAlpha()
          .toColourspace('srgb')
          .raw()
          .toBuffer({ resolveWithObject: true });
        const { target, window } = cropGeometry(info.width, info.height, getPreset('torchvision'));
        assertSameBytes(data, info.width, info.height, target, window);
      }
    },
  );
});
