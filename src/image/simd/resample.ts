/**
 * AssemblyScript, compiled to WebAssembly with SIMD by `npm run build:wasm` (not by tsc): the two passes of Pillow's
 * 8-bit bilinear resize from ../resample.ts, on the same integers, so the bytes are the same (test/image/resample-simd
 * checks every hymenoptera image and seeded random ones). JavaScript cannot name SIMD; here one tap of one RGB pixel
 * is one i32x4 multiply-add, and a vertical tap over 16 samples is four, which makes the resize ~5× faster than the
 * JavaScript loops.
 *
 * Memory belongs to the caller (resample-simd.ts lays out the image, the coefficients and the outputs, and grows it);
 * this module allocates nothing. The horizontal pass reads and writes one byte past its last pixel, the vertical pass
 * reads and writes up to 15 bytes past a row (rows go top to bottom, so what spills into the next row is overwritten
 * later), so the caller leaves 16 bytes of slack after each region.
 */

/** Pillow's fixed point: 22 fractional bits, and half of one for rounding. */
const PRECISION_BITS: i32 = 22;
const ROUND_HALF: i32 = 1 << (PRECISION_BITS - 1);

/**
 * The horizontal pass over `rows` source rows of RGB (stride `srcStride` bytes) into `count` pixels per row at `mid`.
 * Per output pixel: `start` and `taps` (i32) and `ksize` i32 weights. A pixel's three channels (and one byte of the
 * next pixel, whose lane is dropped) share each tap's weight; clamping to 0–255 is the saturating narrow, which equals
 * Pillow's clip8 on the shifted sum.
 */
export function horizontalRgb(
  src: usize,
  srcStride: i32,
  rows: i32,
  mid: usize,
  start: usize,
  taps: usize,
  weights: usize,
  ksize: i32,
  count: i32,
): void {
  const half = i32x4.splat(ROUND_HALF);
  let out = mid;
  for (let y = 0; y < rows; y++) {
    const row = src + <usize>(y * srcStride);
    for (let x = 0; x < count; x++) {
      const n = load<i32>(taps + ((<usize>x) << 2));
      let s = row + <usize>(load<i32>(start + ((<usize>x) << 2)) * 3);
      let k = weights + ((<usize>(x * ksize)) << 2);
      let acc = half;
      for (let i = 0; i < n; i++) {
        const pixel = i32x4.extend_low_i16x8_u(i16x8.extend_low_i8x16_u(v128.load32_zero(s)));
        acc = i32x4.add(acc, i32x4.mul(pixel, i32x4.splat(load<i32>(k))));
        s += 3;
        k += 4;
      }
      const narrow = i16x8.narrow_i32x4_s(i32x4.shr_s(acc, PRECISION_BITS), half);
      v128.store32_lane(out, i8x16.narrow_i16x8_u(narrow, narrow), 0);
      out += 3;
    }
  }
}

/**
 * The vertical pass: output row y of `height` is the weighted sum of `taps[y]` consecutive intermediate rows from
 * `start[y]` (counted from `firstRow`, the first row the horizontal pass computed), `stride` bytes each, 16 at a time.
 */
export function vertical(
  mid: usize,
  stride: i32,
  firstRow: i32,
  out: usize,
  height: i32,
  start: usize,
  taps: usize,
  weights: usize,
  ksize: i32,
): void {
  const half = i32x4.splat(ROUND_HALF);
  for (let y = 0; y < height; y++) {
    const n = load<i32>(taps + ((<usize>y) << 2));
    const from = mid + <usize>((load<i32>(start + ((<usize>y) << 2)) - firstRow) * stride);
    const k = weights + ((<usize>(y * ksize)) << 2);
    const row = out + <usize>(y * stride);
    for (let x = 0; x < stride; x += 16) {
      let a0 = half;
      let a1 = half;
      let a2 = half;
      let a3 = half;
      let p = from + <usize>x;
      for (let i = 0; i < n; i++) {
        const v = v128.load(p);
        const w = i32x4.splat(load<i32>(k + ((<usize>i) << 2)));
        const lo = i16x8.extend_low_i8x16_u(v);
        const hi = i16x8.extend_high_i8x16_u(v);
        a0 = i32x4.add(a0, i32x4.mul(i32x4.extend_low_i16x8_u(lo), w));
        a1 = i32x4.add(a1, i32x4.mul(i32x4.extend_high_i16x8_u(lo), w));
        a2 = i32x4.add(a2, i32x4.mul(i32x4.extend_low_i16x8_u(hi), w));
        a3 = i32x4.add(a3, i32x4.mul(i32x4.extend_high_i16x8_u(hi), w));
        p += <usize>stride;
      }
      const low = i16x8.narrow_i32x4_s(i32x4.shr_s(a0, PRECISION_BITS), i32x4.shr_s(a1, PRECISION_BITS));
      const high = i16x8.narrow_i32x4_s(i32x4.shr_s(a2, PRECISION_BITS), i32x4.shr_s(a3, PRECISION_BITS));
      v128.store(row + <usize>x, i8x16.narrow_i16x8_u(low, high));
    }
  }
}
