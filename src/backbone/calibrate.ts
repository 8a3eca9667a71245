/**
 * Activation ranges for static quantisation, measured by running the FP32 model on calibration images.
 * `minmax` asks onnxruntime for ReduceMin/ReduceMax of each tensor, so only two scalars per tensor cross into JS
 * (the activations themselves stay inside onnxruntime). `percentile` needs the values: it reads each tensor back
 * and keeps a strided sample of it, bounded per batch, so memory does not grow with the activation size.
 */
import * as ort from '../onnx/ort.js';
import { invalidParameter } from '../errors.js';
import { type GraphProto, type ModelProto, type NodeProto, encodeModel, graphInputs, onnx } from './graph.js';
import { DataType, makeIntAttribute, makeNode, makeValueInfo } from '../onnx/build.js';

type ValueInfo = NonNullable<GraphProto['output']>[number];

import { RANGE_METHODS, type RangeMethod, checkRangeOptions } from './int8-defaults.js';

export { RANGE_METHODS, type RangeMethod, checkRangeOptions };

export interface ActivationRange {
  min: number;
  max: number;
}

/** One forward pass worth of preprocessed pixels, shaped as the model's input (e.g. [N,3,224,224]). */
export interface CalibrationBatch {
  data: Float32Array;
  dims: number[];
}

export interface RangeOptions {
  method: RangeMethod;
  /** For `percentile`: keep values up to this percentile (and down from 100 − it). */
  percentile: number;
  threads?: number;
}

/** Values kept per tensor per batch for percentiles: enough for the 99.99th of a few dozen images. */
const SAMPLES_PER_BATCH = 16384;

function output(name: string): ValueInfo {
  return makeValueInfo(name, DataType.FLOAT);
}

function reduceNode(opType: 'ReduceMin' | 'ReduceMax', input: string, out: string): NodeProto {
  const name = `featcache/calibrate/${opType}/${input}`;
  return makeNode(opType, [input], out, { name, attributes: [makeIntAttribute('keepdims', 0)] });
}

/** The model with each tensor (min/max: its reduced min and max) as an extra output. */
/** @internal */
export function calibrationModel(
  model: ModelProto,
  tensors: string[],
  method: RangeMethod,
): { bytes: Uint8Array; outputs: Map<string, string[]> } {
  const graph = model.graph as GraphProto;
  const outputs = new Map<string, string[]>();
  const extraNodes: NodeProto[] = [];
  const extraOutputs: ValueInfo[] = [];
  tensors.forEach((t, i) => {
    if (method === 'minmax') {
      const names = [`featcache_calib_min_${i}`, `featcache_calib_max_${i}`];
      extraNodes.push(reduceNode('ReduceMin', t, names[0]!), reduceNode('ReduceMax', t, names[1]!));
      extraOutputs.push(output(names[0]!), output(names[1]!));
      outputs.set(t, names);
    } else {
      if (!(graph.output ?? []).some((o) => o.name === t)) extraOutputs.push(output(t));
      outputs.set(t, [t]);
    }
  });
  const calib = onnx.GraphProto.create({
    ...graph,
    node: [...(graph.node ?? []), ...extraNodes],
    output: [...(graph.output ?? []), ...extraOutputs],
  });
  return { bytes: encodeModel(onnx.ModelProto.create({ ...model, graph: calib })), outputs };
}

/** Value at quantile q (0..1) of sorted values, interpolating linearly like numpy's default. */
export function quantile(sorted: Float32Array, q: number): number {
  if (sorted.length === 0) return 0;
  const position = q * (sorted.length - 1);
  const lower = Math.floor(position);
  const upper = Math.min(sorted.length - 1, lower + 1);
  return sorted[lower]! + (sorted[upper]! - sorted[lower]!) * (position - lower);
}

/** A strided, offset sample of `values`; the offset varies with the batch so repeated batches sample new places. */
function stridedSample(values: Float32Array, limit: number, offset: number): Float32Array {
  if (values.length <= limit) return values.slice();
  const stride = values.length / limit;
  const out = new Float32Array(limit);
  for (let i = 0; i < limit; i++)
    out[i] = values[Math.min(values.length - 1, Math.floor(i * stride + (offset % stride)))]!;
  return out;
}

/** Runs the FP32 model over the calibration batches and returns each tensor's range. */
/** @internal */
export async function collectRanges(
  model: ModelProto,
  tensors: string[],
  batches: AsyncIterable<CalibrationBatch>,
  options: RangeOptions,
): Promise<Map<string, ActivationRange>> {
  checkRangeOptions(options);
  const inputName = graphInputs(model.graph as GraphProto)[0]!.name;
  const { bytes, outputs } = calibrationModel(model, tensors, options.method);
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    ...(options.threads ? { intraOpNumThreads: options.threads } : {}),
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  });
  const ranges = new Map<string, ActivationRange>(
    tensors.map((t) => [t, { min: Number.POSITIVE_INFINITY, max: Number.NEGATIVE_INFINITY }]),
  );
  const samples = new Map<string, Float32Array[]>(tensors.map((t) => [t, []]));
  let batchIndex = 0;
  try {
    for await (const batch of batches) {
      const fetches = [...new Set([...outputs.values()].flat())];
      const result = await session.run({ [inputName]: new ort.Tensor('float32', batch.data, batch.dims) }, fetches);
      for (const t of tensors) {
        const range = ranges.get(t)!;
        const [first, second] = outputs.get(t)!;
        if (options.method === 'minmax') {
          range.min = Math.min(range.min, (result[first!]!.data as Float32Array)[0]!);
          range.max = Math.max(range.max, (result[second!]!.data as Float32Array)[0]!);
        } else {
          // percentile and mse both work on a sample of the values.
          const values = result[first!]!.data as Float32Array;
          for (let i = 0; i < values.length; i++) {
            const v = values[i]!;
            if (v < range.min) range.min = v;
            if (v > range.max) range.max = v;
          }
          samples.get(t)!.push(stridedSample(values, SAMPLES_PER_BATCH, batchIndex * 7919));
        }
      }
      for (const tensor of Object.values(result)) tensor.dispose?.();
      batchIndex++;
    }
  } finally {
    await session.release();
  }
  if (batchIndex === 0) throw invalidParameter('calibrate', 'at least one calibration image', 0);
  if (options.method !== 'minmax') {
    const q = options.percentile / 100;
    for (const t of tensors) {
      const parts = samples.get(t)!;
      const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      parts.reduce((offset, p) => (all.set(p, offset), offset + p.length), 0);
      all.sort();
      const range = ranges.get(t)!;
      // Clipping only narrows: a range from a sample can never widen the observed one.
      const chosen =
        options.method === 'mse' ? mseRange(all, range) : { min: quantile(all, 1 - q), max: quantile(all, q) };
      ranges.set(t, { min: Math.max(range.min, chosen.min), max: Math.min(range.max, chosen.max) });
    }
  }
  return ranges;
}

/**
 * The clipping range that minimises the expected squared error of uint8 quantisation over sorted sample values:
 * rounding noise (step²/12 per value inside the range) plus clipping error (distance to the range for values
 * outside). Searched over a grid of fractions of the observed min and max; prefix sums make each candidate O(log n).
 */
export function mseRange(sorted: Float32Array, observed: ActivationRange): ActivationRange {
  const n = sorted.length;
  if (n === 0) return observed;
  const prefix = new Float64Array(n + 1);
  const prefixSq = new Float64Array(n + 1);
  for (let i = 0; i < n; i++) {
    prefix[i + 1] = prefix[i]! + sorted[i]!;
    prefixSq[i + 1] = prefixSq[i]! + sorted[i]! * sorted[i]!;
  }
  /** First index with sorted[i] > x (upper) or >= x (lower). */
  const bound = (x: number, strict: boolean) => {
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (strict ? sorted[mid]! <= x : sorted[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  // Σ over a slice of (v − c)² = Σv² − 2cΣv + k c².
  const squaredDistance = (from: number, to: number, c: number) =>
    prefixSq[to]! - prefixSq[from]! - 2 * c * (prefix[to]! - prefix[from]!) + (to - from) * c * c;
  const min = Math.min(observed.min, 0);
  const max = Math.max(observed.max, 0);
  const fractions = Array.from({ length: 50 }, (_, i) => 1 - i / 60);
  let best = { min, max, error: Number.POSITIVE_INFINITY };
  for (const fl of min < 0 ? fractions : [1]) {
    for (const fh of fractions) {
      const lo = min * fl;
      const hi = max * fh;
      const step = (hi - lo) / 255;
      if (!(step > 0)) continue;
      const below = bound(lo, false);
      const above = bound(hi, true);
      const error =
        squaredDistance(0, below, lo) + squaredDistance(above, n, hi) + ((above - below) * step * step) / 12;
      if (error < best.error) best = { min: lo, max: hi, error };
    }
  }
  return { min: best.min, max: best.max };
}
