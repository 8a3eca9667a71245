/**
 * Runs the resize's two passes in WebAssembly SIMD (simd/resample.ts, built to simd/resample.wasm next to this file):
 * the same integers as resample.ts's JavaScript, so the same bytes, in about a fifth of the time. That time came out
 * of onnxruntime's two threads on a 2-core machine, where extract ÷ forward-only was 0.86–0.88 with the JavaScript.
 *
 * The module is compiled on the first resize. Where it cannot load (a build without `npm run build:wasm`, a runtime
 * without WebAssembly SIMD) `resampleEngine()` says why and callers use the JavaScript passes, which give the same
 * bytes. One instance serves every resize, since resizes run one at a time on the main thread. Its memory holds the
 * source rows a chunk at a time (SOURCE_CHUNK_BYTES), the horizontal pass's rows and the crop, so it stays a few MB
 * whatever the photo's size; should it fail to grow, that image is resized in JavaScript.
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ResampleCoefficients } from './resample.js';

const WASM_FILE = new URL('./simd/resample.wasm', import.meta.url);
const PAGE = 65_536;
/** Source rows are copied in and passed horizontally this many bytes at a time (at least one row). */
const SOURCE_CHUNK_BYTES = 4 * 1024 * 1024;
/**
 * Each region is followed by this slack: the horizontal pass reads one byte past its last pixel and writes one past
 * its last output, the vertical pass reads and writes up to 15 past a row (rows are written top to bottom, so what
 * spills into the next row is overwritten).
 */
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
    return { reason: `${fileURLToPath(WASM_FILE)}: ${error instanceof Error ? error.message : String(error)}` };
  }
}

/**
 * Which implementation resizes RGB images in this process (why not WebAssembly, where it is JavaScript), and the
 * bytes the instance's memory holds (0 before the first resize, and after one whose memory could not grow).
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
 * Pillow's resize of interleaved RGB (width × height) restricted to `window`, which reads source rows `rows`
 * ([first, last)), with both passes given (an identity pass stands in for one Pillow skips: weight 1.0 at one tap
 * leaves every byte as it is). Undefined where the WebAssembly module is not available or its memory cannot grow:
 * the caller then resizes in JavaScript.
 */
export function resizeRgbSimd(
  src: Uint8Array,
  width: number,
  rows: [number, number],
  h: ResampleCoefficients,
  v: ResampleCoefficients,
  window: { left: number; top: number; width: number; height: number },
): Uint8Array | undefined {
  try {
    const k = instance();
    return k && runPasses(k, src, width, rows, h, v, window);
  } catch (error) {
    // Out of memory (an instance or its growth): nothing is half-written that the JavaScript passes would read.
    if (!(error instanceof RangeError)) throw error;
    kernels = undefined;
    return undefined;
  }
}

function runPasses(
  k: Kernels,
  src: Uint8Array,
  width: number,
  [firstRow, lastRow]: [number, number],
  h: ResampleCoefficients,
  v: ResampleCoefficients,
  window: { left: number; top: number; width: number; height: number },
): Uint8Array {
  const [rowBytes, stride] = [width * 3, window.width * 3];
  const chunkRows = Math.max(1, Math.min(lastRow - firstRow, Math.floor(SOURCE_CHUNK_BYTES / rowBytes)));
  const hs = sliceOf(h, window.left, window.width);
  const vs = sliceOf(v, window.top, window.height);
  const coefficients = {
    hStart: hs.start,
    hTaps: hs.taps,
    hWeights: hs.weights,
    vStart: vs.start,
    vTaps: vs.taps,
    vWeights: vs.weights,
  };
  const { at, end } = layout({
    src: chunkRows * rowBytes,
    mid: (lastRow - firstRow) * stride,
    out: window.height * stride,
    ...Object.fromEntries(Object.entries(coefficients).map(([name, values]) => [name, values.byteLength])),
  });
  reserve(k.memory, end);
  const [bytes, words] = [new Uint8Array(k.memory.buffer), new Int32Array(k.memory.buffer)];
  for (const [name, values] of Object.entries(coefficients)) words.set(values, at[name]! / 4);
  // Chunks go in order: the byte the horizontal pass writes past a chunk's last pixel is the next chunk's first.
  for (let row = firstRow; row < lastRow; row += chunkRows) {
    const rows = Math.min(chunkRows, lastRow - row);
    bytes.set(src.subarray(row * rowBytes, (row + rows) * rowBytes), at.src);
    const mid = at.mid! + (row - firstRow) * stride;
    k.horizontalRgb(at.src!, rowBytes, rows, mid, at.hStart!, at.hTaps!, at.hWeights!, h.ksize, window.width);
  }
  k.vertical(at.mid!, stride, firstRow, at.out!, window.height, at.vStart!, at.vTaps!, at.vWeights!, v.ksize);
  return new Uint8Array(k.memory.buffer, at.out, window.height * stride).slice();
}
