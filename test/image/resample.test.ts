/**
 * Pillow's bilinear resize, reproduced: expected bytes below were produced by Pillow 12.3 itself
 * (`Image.frombytes("RGB", (7, 5), data).resize(size, Image.BILINEAR).tobytes()`), so this runs without Python;
 * test/image/torchvision-parity.test.ts checks real photos against torchvision in a venv.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bilinearCoefficients, resizeBilinearWindow, resizeBilinearWindowJs } from '../../src/image/resample.js';

const W = 7;
const H = 5;
const SOURCE = Uint8Array.from({ length: W * H * 3 }, (_, i) => (i * 37 + Math.floor(i / 3) * 11) % 256);

// prettier-ignore
const PILLOW: Record<string, number[]> = {
  '3x4': [113, 109, 118, 162, 109, 112, 155, 83, 92, 126, 163, 136, 115, 152, 110, 100, 137, 110, 109, 114, 151, 136, 103, 140, 136, 88, 125, 130, 154, 108, 147, 154, 89, 127, 128, 82],
  '7x2': [74, 111, 148, 138, 175, 107, 155, 99, 136, 126, 163, 95, 143, 87, 124, 114, 151, 83, 131, 75, 112, 72, 109, 146, 136, 173, 117, 165, 97, 134, 124, 161, 105, 153, 85, 122, 112, 149, 93, 141, 73, 110],
  '4x5': [64, 89, 126, 182, 86, 123, 171, 75, 112, 168, 59, 96, 138, 175, 102, 135, 172, 86, 124, 161, 75, 108, 145, 72, 114, 151, 188, 98, 135, 172, 87, 124, 161, 84, 121, 158, 66, 91, 128, 184, 88, 125, 173, 77, 114, 170, 61, 98, 140, 177, 104, 137, 174, 88, 126, 163, 77, 110, 147, 74],
  '11x9': [0, 37, 74, 55, 92, 129, 133, 147, 184, 211, 62, 99, 195, 69, 106, 110, 147, 184, 188, 62, 99, 195, 46, 83, 110, 124, 161, 165, 62, 99, 220, 1, 38, 29, 66, 103, 84, 121, 119, 154, 176, 135, 178, 91, 104, 169, 98, 104, 139, 176, 127, 162, 91, 97, 162, 75, 88, 131, 153, 112, 147, 91, 89, 163, 30, 67, 76, 113, 150, 131, 168, 102, 189, 223, 53, 122, 138, 113, 127, 145, 100, 186, 223, 33, 120, 138, 93, 106, 122, 97, 166, 200, 30, 117, 138, 72, 69, 77, 114, 124, 161, 198, 128, 165, 137, 131, 168, 75, 118, 155, 153, 115, 152, 137, 120, 157, 52, 108, 145, 130, 102, 139, 137, 108, 145, 52, 98, 135, 107, 88, 125, 162, 172, 209, 246, 111, 148, 185, 49, 86, 123, 127, 164, 201, 111, 148, 185, 26, 63, 100, 104, 141, 178, 111, 148, 185, 26, 63, 100, 81, 118, 155, 136, 173, 210, 78, 115, 152, 81, 118, 155, 97, 121, 158, 175, 108, 145, 159, 105, 142, 74, 111, 148, 152, 98, 135, 159, 92, 129, 74, 98, 135, 129, 88, 125, 184, 79, 116, 12, 49, 86, 67, 104, 128, 142, 159, 170, 202, 74, 103, 188, 81, 107, 122, 159, 167, 181, 74, 100, 186, 58, 87, 119, 136, 147, 161, 74, 98, 203, 13, 50, 59, 96, 133, 114, 151, 111, 177, 206, 88, 146, 121, 112, 146, 128, 103, 169, 206, 73, 139, 121, 96, 130, 105, 96, 154, 183, 65, 131, 121, 81, 109, 60, 97, 88, 125, 162, 143, 180, 101, 198, 235, 39, 113, 150, 117, 120, 157, 101, 198, 235, 16, 113, 150, 94, 97, 134, 101, 175, 212, 16, 113, 150, 71, 52, 89, 126],
};

const full = (w: number, h: number) =>
  resizeBilinearWindow(SOURCE, W, H, 3, { width: w, height: h }, { left: 0, top: 0, width: w, height: h });

describe("Pillow's bilinear resize", () => {
  // resizeBilinearWindow takes the WebAssembly passes for RGB (test/image/resample-simd.test.ts checks it does);
  // the JavaScript passes must give Pillow's bytes too, as the fallback and for other channel counts.
  for (const [engine, resize] of [
    ['WebAssembly', resizeBilinearWindow],
    ['JavaScript', resizeBilinearWindowJs],
  ] as const) {
    for (const [size, expected] of Object.entries(PILLOW)) {
      const [w, h] = size.split('x').map(Number) as [number, number];
      it(`${W}×${H} → ${size} equals Pillow's bytes (down, up, one axis only), ${engine} passes`, () => {
        const window = { left: 0, top: 0, width: w, height: h };
        assert.deepEqual(Array.from(resize(SOURCE, W, H, 3, { width: w, height: h }, window)), expected);
      });
    }
  }

  it('a window equals the same pixels of the full resize', () => {
    const whole = full(11, 9);
    const window = resizeBilinearWindow(
      SOURCE,
      W,
      H,
      3,
      { width: 11, height: 9 },
      { left: 3, top: 2, width: 5, height: 4 },
    );
    const expected: number[] = [];
    for (let y = 2; y < 6; y++) expected.push(...whole.subarray((y * 11 + 3) * 3, (y * 11 + 8) * 3));
    assert.deepEqual(Array.from(window), expected);
  });

  it('weights of every output sample sum to one in 22-bit fixed point (within rounding), and widen when reducing', () => {
    for (const [inSize, outSize] of [
      [500, 256],
      [256, 500],
      [4000, 232],
    ] as const) {
      const c = bilinearCoefficients(inSize, outSize);
      for (let i = 0; i < outSize; i++) {
        let sum = 0;
        for (let k = 0; k < c.count[i]!; k++) sum += c.weights[i * c.ksize + k]!;
        assert.ok(Math.abs(sum - 2 ** 22) <= c.count[i]!, `${inSize}→${outSize} sample ${i}: ${sum}`);
      }
      const reduction = inSize / outSize;
      assert.equal(c.ksize, Math.ceil(Math.max(reduction, 1)) * 2 + 1);
    }
  });

  it('any channel count resizes each channel as the RGB path does (2, 3, 4 and 5 taps per sample)', () => {
    // 40×30 down to 11×13 (≈3.6× and 2.3×: 5–9 taps), 19×17 (≈2×), 27×21 (≈1.5×) and up to 50×44.
    const [w, h] = [40, 30];
    const rgb = Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 73 + Math.floor(i / 7) * 29) % 256);
    const rgba = new Uint8Array(w * h * 4);
    for (let p = 0; p < w * h; p++) {
      rgba.set(rgb.subarray(p * 3, p * 3 + 3), p * 4);
      rgba[p * 4 + 3] = (p * 11) % 256;
    }
    for (const [ow, oh] of [
      [11, 13],
      [19, 17],
      [27, 21],
      [50, 44],
    ] as const) {
      const window = { left: 2, top: 1, width: ow - 3, height: oh - 2 };
      const three = resizeBilinearWindow(rgb, w, h, 3, { width: ow, height: oh }, window);
      const four = resizeBilinearWindow(rgba, w, h, 4, { width: ow, height: oh }, window);
      const dropAlpha = four.filter((_, i) => i % 4 !== 3);
      assert.deepEqual(Array.from(dropAlpha), Array.from(three), `${w}×${h} → ${ow}×${oh}`);
    }
  });
});
