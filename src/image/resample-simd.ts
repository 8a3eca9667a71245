/**
 * Runs the resize's two passes in WebAssembly SIMD (simd/resample.ts, built to simd/resample.wasm next to this file):
 * the same integers as resample.ts's JavaScript, so the same bytes, in about a fifth of the time. That time came out
 * of onnxruntime's two threads on a 2-core machine, where extract ÷ forward-only was 0.86–0.88 with the JavaScript.
 *
 * The module is compiled on the first resize. Where it cannot load (a build without `npm run build:wasm`, a runtime
 * without WebAssembly SIMD) `resampleEngine()` says why and callers use the JavaScript passes, which give the same
 * bytes. One instance serves every resize, since resizes run one at a time on the main thread; one that grew past
 * MEMORY_KEPT for a very large image is dropped afterwards so its memory goes back to the garbage collector.
 */
import fs from 'node:fs';
import type { ResampleCoefficients } from './resample.js';

const WASM_FILE = new URL('./simd/resample.wasm', import.meta.url);
const PAGE = 65_536;
/** An instance whose memory grew past this (a ~20-megapixel image) is not kept for the next image. */
const MEMORY_KEPT = 64 * 1024 * 1024;
/** The passes read up to 15 bytes past a region and write one past a row: each region is followed by this slack. */
const SLACK = 16;

interface Kernels {
  memory: WebAssembly.Memory;
  horizontalRgb(
    src: number,
    srcStride: number,
    rows: number,
    mid: number,
    start: number,
    taps: number,
    weights: number,
    ksize: number,
    count: number,
  ): void;
  vertical(
    mid: number,
    stride: number,
    firstRow: number,
    out: number,
    height: number,
    start: number,
    taps: number,
    weights: number,
    ksize: number,
  ): void;
}

let compiled: { module: WebAssembly.Module } | { reason: string } | undefined;
let kernels: Kernels | undefined;

function compile(): { module: WebAssembly.Module } | { reason: string } {
  try {
    return { module: new WebAssembly.Module(fs.readFileSync(WASM_FILE)) };
  } catch (error) {
    return { reason: `${WASM_FILE.pathname}: ${error instanceof Error ? error.message : String(error)}` };
  }
}

/**
 * Which implementation resizes RGB images in this process (why not WebAssembly, where it is JavaScript), and the
 * bytes the kept instance holds (0 before the first resize and after a very large one).
 */
export function resampleEngine(): { engine: 'wasm-simd'; memoryBytes: number } | { engine: 'js'; reason: string } {
  compiled ??= compile();
  if (!('module' in compiled)) return { engine: 'js', reason: compiled.reason };
  return { engine: 'wasm-simd', memoryBytes: kernels?.memory.buffer.byteLength ?? 0 };
}

function instance(): Kernels | undefined {
  compiled ??= compile();
  if (!('module' in compiled)) return undefined;
  kernels ??= new WebAssembly.Instance(compiled.module, {}).exports as unknown as Kernels;
  return kernels;
}

/** Byte offsets of each region in the instance's memory, 16-byte aligned, each followed by SLACK bytes. */
function layout(sizes: Record<string, number>): { at: Record<string, number>; end: number } {
  const at: Record<string, number> = {};
  let end = 0;
  for (const [name, bytes] of Object.entries(sizes)) {
    at[name] = end;
    end += Math.ceil((bytes + SLACK) / 16) * 16;
  }
  return { at, end };
}

function reserve(memory: WebAssembly.Memory, bytes: number): void {
  const missing = Math.ceil((bytes - memory.buffer.byteLength) / PAGE);
  if (missing > 0) memory.grow(missing);
}

/** The window's slice of a pass's per-output coefficients, as the kernels read them. */
function sliceOf(c: ResampleCoefficients, first: number, count: number) {
  return {
    start: c.start.subarray(first, first + count),
    taps: c.count.subarray(first, first + count),
    weights: c.weights.subarray(first * c.ksize, (first + count) * c.ksize),
  };
}

/**
 * Pillow's resize of interleaved RGB (width × height) restricted to `window`, with both passes given (an identity
 * pass stands in for one Pillow skips: weight 1.0 at one tap leaves every byte as it is). Undefined where the
 * WebAssembly module is not available.
 */
export function resizeRgbSimd(
  src: Uint8Array,
  width: number,
  h: ResampleCoefficients,
  v: ResampleCoefficients,
  window: { left: number; top: number; width: number; height: number },
): Uint8Array | undefined {
  const k = instance();
  if (!k) return undefined;
  const last = window.top + window.height - 1;
  const [firstRow, lastRow] = [v.start[window.top]!, v.start[last]! + v.count[last]!];
  const stride = window.width * 3;
  const hs = sliceOf(h, window.left, window.width);
  const vs = sliceOf(v, window.top, window.height);
  const { at, end } = layout({
    src: (lastRow - firstRow) * width * 3,
    mid: (lastRow - firstRow) * stride,
    out: window.height * stride,
    hStart: hs.start.byteLength,
    hTaps: hs.taps.byteLength,
    hWeights: hs.weights.byteLength,
    vStart: vs.start.byteLength,
    vTaps: vs.taps.byteLength,
    vWeights: vs.weights.byteLength,
  });
  reserve(k.memory, end);
  const bytes = new Uint8Array(k.memory.buffer);
  const words = new Int32Array(k.memory.buffer);
  bytes.set(src.subarray(firstRow * width * 3, lastRow * width * 3), at.src);
  for (const [name, values] of [
    ['hStart', hs.start],
    ['hTaps', hs.taps],
    ['hWeights', hs.weights],
    ['vStart', vs.start],
    ['vTaps', vs.taps],
    ['vWeights', vs.weights],
  ] as const)
    words.set(values, at[name]! / 4);
  k.horizontalRgb(
    at.src!,
    width * 3,
    lastRow - firstRow,
    at.mid!,
    at.hStart!,
    at.hTaps!,
    at.hWeights!,
    h.ksize,
    window.width,
  );
  k.vertical(at.mid!, stride, firstRow, at.out!, window.height, at.vStart!, at.vTaps!, at.vWeights!, v.ksize);
  const result = new Uint8Array(k.memory.buffer, at.out, window.height * stride).slice();
  if (k.memory.buffer.byteLength > MEMORY_KEPT) kernels = undefined;
  return result;
}
