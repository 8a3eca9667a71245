/** The backbone stage: an ONNX model file in, a function from preprocessed pixels to tapped features out. */
import * as path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { FeatcacheError } from '../errors.js';
import { sha256Bytes } from '../util/fsx.js';
import { graphInputs, loadModel } from './graph.js';
import { type DeviceSpec, type InputLayout, inputLayout, openSession, runBatch } from './session.js';
import { DEFAULT_TAP, FEATURE_OUTPUT, type TapPoint, resolveTap, tapModel } from './tap.js';

export interface BackboneOptions {
  tap?: string | undefined;
  device: DeviceSpec;
  threads: number;
}

export interface Backbone {
  file: string;
  sha256: string;
  tap: TapPoint;
  input: InputLayout;
  provider: string;
  fallbackReasons: string[];
  dim: number;
  /** Features for `count` images laid out as `input` expects, each `size`×`size`. */
  extract(pixels: Float32Array, count: number, size: number): Promise<Float32Array>;
  close(): Promise<void>;
}

export async function openBackbone(file: string, options: BackboneOptions): Promise<Backbone> {
  const { model, bytes } = await loadModel(file);
  const graph = model.graph!;
  const inputs = graphInputs(graph);
  if (inputs.length !== 1) {
    throw new FeatcacheError(`--model ${file}: expected one image input, found ${inputs.length} (${inputs.map((i) => i.name).join(', ')})`);
  }
  const input = inputLayout(inputs[0]!.name, inputs[0]!.shape);
  const tap = resolveTap(graph, options.tap ?? DEFAULT_TAP);
  const opened = await openSession(tapModel(model, tap), { device: options.device, threads: options.threads });
  const session: ort.InferenceSession = opened.session;
  const extract = async (pixels: Float32Array, count: number, size: number) =>
    (await runBatch(session, input, { height: size, width: size }, pixels, count, FEATURE_OUTPUT)).features;
  const probeSize = input.height ?? 224;
  const probe = await runBatch(session, input, { height: probeSize, width: input.width ?? probeSize }, new Float32Array(3 * probeSize * (input.width ?? probeSize)), 1, FEATURE_OUTPUT);
  return {
    file: path.resolve(file),
    sha256: sha256Bytes(bytes),
    tap,
    input,
    provider: opened.provider,
    fallbackReasons: opened.fallbackReasons,
    dim: probe.dim,
    extract,
    close: () => session.release(),
  };
}

export { parseDevice } from './session.js';
export type { DeviceSpec } from './session.js';
