/**
 * Pillow's bilinear resize of 8-bit images (libImaging/Resample.c, `ImagingResample` with the triangle filter),
 * reproduced operation for operation so that featcache's crops equal torchvision's Resize on a PIL image: the
 * filter's support widens with the reduction factor (antialiasing), coefficients are rounded to 22-bit fixed point,
 * and the horizontal pass is rounded to 8 bits before the vertical one. sharp's `linear` kernel differs from it by
 * up to 110 levels on an upscaled hymenoptera image and by ≈ 0.005 mean abs (normalised), which is enough to flip the
 * top-1 class of a bundle between featcache and README's Python snippet.
 *
 * Only the output window that the centre crop keeps is computed: every output pixel depends on its own row and
 * column coefficients alone, so computing a window gives exactly the values of the full resize.
 */

import { resizeRgbSimd } from './resample-simd.js';

const PRECISION_BITS = 32 - 8 - 2;
const FIXED_ONE = 1 << PRECISION_BITS;
const ROUND_HALF = 1 << (PRECISION_BITS - 1);

/** Per output index: first source index, number of taps, and the fixed-point weights (`ksize` slots each). */
export interface ResampleCoefficients {
  ksize: number;
  start: Int32Array;
  count: Int32Array;
  weights: Int32Array;
}

const bilinear = (x: number): number => {
  const a = Math.abs(x);
  return a < 1 ? 1 - a : 0;
};

/** Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `inSize` samples to `outSize`. */
export function bilinearCoefficients(inSize: number, outSize: number): ResampleCoefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 1 * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterScale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = bilinear((x + xmin - center + 0.5) * ss);
      ww += k[x]!;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x]! / ww : k[x]!;
      weights[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * FIXED_ONE : 0.5 + w * FIXED_ONE);
    }
    start[xx] = xmin;
    count[xx] = xmax;
  }
  return { ksize, start, count, weights };
}

function clip8(v: number): number {
  if (v >= FIXED_ONE * 256) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

let scratchBuffer = new Uint8Array(0);

/** The horizontal pass's rows, reused from image to image (the passes are synchronous, so one buffer serves all). */
function scratch(length: number): Uint8Array {
  if (scratchBuffer.length < length) scratchBuffer = new Uint8Array(length);
  return scratchBuffer.subarray(0, length);
}

/** The window's source rows, as [first, last) (all rows of the window when there is no vertical pass). */
function sourceRows(v: ResampleCoefficients | undefined, window: { top: number; height: number }): [number, number] {
  if (!v) return [window.top, window.top + window.height];
  const last = window.top + window.height - 1;
  return [v.start[window.top]!, v.start[last]! + v.count[last]!];
}

/**
 * Resizes interleaved 8-bit `channels`-channel pixels (width × height) to outWidth × outHeight as Pillow's
 * `Image.resize(size, Image.BILINEAR)` does, and returns only the window (left, top, cropWidth × cropHeight).
 * RGB goes through the WebAssembly SIMD passes (resample-simd.ts) where they load; the JavaScript passes below give
 * the same bytes and serve every other case.
 */
export function resizeBilinearWindow(
  src: Uint8Array,
  width: number,
  height: number,
  channels: number,
  out: Size,
  window: Window,
): Uint8Array {
  return resize(src, { width, height, channels }, out, window, true);
}

/** The JavaScript passes alone: the reference the WebAssembly passes are tested and benchmarked against. */
export function resizeBilinearWindowJs(
  src: Uint8Array,
  width: number,
  height: number,
  channels: number,
  out: Size,
  window: Window,
): Uint8Array {
  return resize(src, { width, height, channels }, out, window, false);
}

type Size = { width: number; height: number };
type Window = { left: number; top: number; width: number; height: number };

function resize(
  src: Uint8Array,
  image: Size & { channels: number },
  out: Size,
  window: Window,
  simd: boolean,
): Uint8Array {
  checkWindow(out, window);
  const h = out.width !== image.width ? bilinearCoefficients(image.width, out.width) : undefined;
  const v = out.height !== image.height ? bilinearCoefficients(image.height, out.height) : undefined;
  const rows = sourceRows(v, window);
  if (simd && image.channels === 3 && (h || v)) {
    const [hc, vc] = [h ?? identityCoefficients(image.width), v ?? identityCoefficients(image.height)];
    const fast = resizeRgbSimd(src, image.width, rows, hc, vc, window);
    if (fast) return fast;
  }
  return resizePasses(src, image.width, image.channels, rows, h, v, window);
}

/** Both passes index coefficients by output position: a window reaching outside the output would read garbage. */
function checkWindow(out: Size, window: Window): void {
  const inside =
    window.left >= 0 &&
    window.top >= 0 &&
    window.width > 0 &&
    window.height > 0 &&
    window.left + window.width <= out.width &&
    window.top + window.height <= out.height;
  if (!inside)
    throw new RangeError(
      `resize window ${window.width}×${window.height} at (${window.left}, ${window.top}) is not inside the ${out.width}×${out.height} output`,
    );
}

/** A pass Pillow skips, as coefficients: one tap of weight 1.0 per sample, which leaves every byte as it is. */
export function identityCoefficients(size: number): ResampleCoefficients {
  return {
    ksize: 1,
    start: Int32Array.from({ length: size }, (_, i) => i),
    count: new Int32Array(size).fill(1),
    weights: new Int32Array(size).fill(FIXED_ONE),
  };
}

function resizePasses(
  src: Uint8Array,
  width: number,
  channels: number,
  [firstRow, lastRow]: [number, number],
  h: ResampleCoefficients | undefined,
  v: ResampleCoefficients | undefined,
  window: Window,
): Uint8Array {
  const stride = window.width * channels;
  const mid = scratch((lastRow - firstRow) * stride);
  for (let y = firstRow; y < lastRow; y++) {
    const [srcAt, midAt] = [y * width * channels, (y - firstRow) * stride];
    if (!h)
      mid.set(src.subarray(srcAt + window.left * channels, srcAt + (window.left + window.width) * channels), midAt);
    else if (channels === 3) horizontalRgb(src, srcAt, mid, midAt, h, window.left, window.width);
    else horizontalAny(src, srcAt, mid, midAt, h, window, channels);
  }
  if (!v) return mid.slice();
  return verticalPass(mid, v, firstRow, window, channels);
}

/*
 * The JavaScript passes: 2.0 ms of CPU per hymenoptera image as plain loops, 1.0–1.4 ms written this way, where the
 * WebAssembly SIMD passes (resample-simd.ts) take 0.2–0.3 ms. Coefficients are read into locals, the sums stay int32
 * (`| 0`: a pixel × a 22-bit weight summed over the support fits, as in Pillow's C ints), and each output row reads its
 * source rows in order.
 */

/** Pillow's horizontal pass for RGB, one source row into one intermediate row: the channels share each tap's weight. */
function horizontalRgb(
  src: Uint8Array,
  srcAt: number,
  mid: Uint8Array,
  midAt: number,
  h: ResampleCoefficients,
  left: number,
  count: number,
): void {
  const { start, count: taps, weights, ksize } = h;
  for (let x = 0; x < count; x++) {
    const xx = left + x;
    const n = taps[xx]!;
    const k = xx * ksize;
    let s = srcAt + start[xx]! * 3;
    let r = ROUND_HALF;
    let g = ROUND_HALF;
    let b = ROUND_HALF;
    for (let i = 0; i < n; i++, s += 3) {
      const w = weights[k + i]!;
      r = (r + src[s]! * w) | 0;
      g = (g + src[s + 1]! * w) | 0;
      b = (b + src[s + 2]! * w) | 0;
    }
    const o = midAt + x * 3;
    mid[o] = clip8(r);
    mid[o + 1] = clip8(g);
    mid[o + 2] = clip8(b);
  }
}

function horizontalAny(
  src: Uint8Array,
  srcAt: number,
  mid: Uint8Array,
  midAt: number,
  h: ResampleCoefficients,
  window: { left: number; width: number },
  channels: number,
): void {
  const { start, count: taps, weights, ksize } = h;
  for (let x = 0; x < window.width; x++) {
    const xx = window.left + x;
    for (let c = 0; c < channels; c++) {
      let acc = ROUND_HALF;
      for (let i = 0; i < taps[xx]!; i++)
        acc = (acc + src[srcAt + (start[xx]! + i) * channels + c]! * weights[xx * ksize + i]!) | 0;
      mid[midAt + x * channels + c] = clip8(acc);
    }
  }
}

/** Pillow's vertical pass over the intermediate rows: each output row is a weighted sum of `n` consecutive rows. */
function verticalPass(
  mid: Uint8Array,
  v: ResampleCoefficients,
  firstRow: number,
  window: { top: number; width: number; height: number },
  channels: number,
): Uint8Array {
  const stride = window.width * channels;
  const result = new Uint8Array(stride * window.height);
  for (let y = 0; y < window.height; y++) {
    const yy = window.top + y;
    const taps = { from: (v.start[yy]! - firstRow) * stride, n: v.count[yy]!, k: yy * v.ksize };
    verticalRow(mid, stride, v.weights, taps, result, y * stride);
  }
  return result;
}

/** One output row. Reductions of up to ~1.5× (3 taps) and 2× (4 taps) are the common cases: unrolled. */
function verticalRow(
  mid: Uint8Array,
  stride: number,
  weights: Int32Array,
  taps: { from: number; n: number; k: number },
  result: Uint8Array,
  at: number,
): void {
  const { from, n, k } = taps;
  const [w0, w1, w2] = [weights[k]!, weights[k + 1]!, weights[k + 2]!];
  const w3 = n > 3 ? weights[k + 3]! : 0;
  const [r1, r2, r3] = [from + stride, from + 2 * stride, from + 3 * stride];
  if (n === 3) {
    for (let i = 0; i < stride; i++)
      result[at + i] = clip8((ROUND_HALF + mid[from + i]! * w0 + mid[r1 + i]! * w1 + mid[r2 + i]! * w2) | 0);
  } else if (n === 4) {
    for (let i = 0; i < stride; i++) {
      const sum = ROUND_HALF + mid[from + i]! * w0 + mid[r1 + i]! * w1 + mid[r2 + i]! * w2 + mid[r3 + i]! * w3;
      result[at + i] = clip8(sum | 0);
    }
  } else {
    for (let i = 0; i < stride; i++) {
      let acc = ROUND_HALF;
      for (let j = 0, r = from + i; j < n; j++, r += stride) acc = (acc + mid[r]! * weights[k + j]!) | 0;
      result[at + i] = clip8(acc);
    }
  }
}
