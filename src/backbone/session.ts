/**
 * Running the tapped backbone. Device choice is an ordered fallback (CUDA, then CPU) that keeps every failure
 * reason, so `--device auto` can say in one line why CUDA was not used.
 */
import * as ort from '../onnx/ort.js';
import { FeatcacheError, optionName, errorMessage, ExitCode } from '../errors.js';
import { checkCuda, cudaFailureReasons } from './cuda-libs.js';

import { type DeviceSpec, threadCount } from './device.js';

export { type DeviceSpec, MAX_THREADS, parseDevice, sessionStackMb, threadCount } from './device.js';

export interface SessionSettings {
  device: DeviceSpec;
  /** ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose (one per physical core). */
  threads: number;
}

/**
 * onnxruntime's optimised graph for the CPU provider (backbone/model-cache.ts): `load` a saved one with optimisation
 * off, or `save` the one this session makes. Other providers always start from the model itself.
 */
export type CpuOptimised = { mode: 'load'; file: string } | { mode: 'save'; file: string };

export interface OpenedSession {
  session: ort.InferenceSession;
  /** The execution provider that actually runs the graph, e.g. "cuda:0" or "cpu". */
  provider: string;
  /** Why a preferred provider was skipped; empty when the first choice worked. */
  fallbackReasons: string[];
  /** Whether the session came from a saved optimised graph, saved one, or neither. */
  optimised?: 'loaded' | 'saved' | 'none';
}

/** The execution-provider attempts for a device spec, in order. Exported so the order is testable without a GPU. */
export function providerPlan(
  device: DeviceSpec,
): { label: string; ep: ort.InferenceSession.ExecutionProviderConfig }[] {
  const cuda = (deviceId: number) => ({ label: `cuda:${deviceId}`, ep: { name: 'cuda', deviceId } as const });
  const cpu = { label: 'cpu', ep: 'cpu' as const };
  switch (device.kind) {
    case 'cpu':
      return [cpu];
    case 'cuda':
      return [cuda(device.deviceId)];
    case 'auto':
      return [cuda(0), cpu];
  }
}

export function sessionOptions(
  ep: ort.InferenceSession.ExecutionProviderConfig,
  threads: number,
): ort.InferenceSession.SessionOptions {
  threadCount(threads);
  return {
    executionProviders: [ep],
    graphOptimizationLevel: 'all',
    ...(threads > 0 ? { intraOpNumThreads: threads } : {}),
    // One inference at a time per session; inter-op parallelism only adds threads that compete for cores.
    executionMode: 'sequential',
    // A missing CUDA provider is an expected outcome of --device auto; we report it in one line ourselves.
    logSeverityLevel: typeof ep === 'object' && ep.name === 'cuda' ? 4 : 3,
    // Idle onnxruntime threads spin by default, burning the cores that decode the next batch and that other processes
    // need. Measured (scripts/bench-spinning.ts, 2 cores, load 8–15, two runs): spinning on ÷ off was 0.70–1.08 for
    // extract and 0.81–1.02 for forward-only, as loaded and beside a busy neighbour (geometric mean of the eight
    // ratios 0.91); earlier, quieter: extract/forward 0.90 spinning, 0.92 not. It never paid beyond the noise, so it
    // is off; FEATCACHE_ORT_SPIN=1 turns it on (say, on a dedicated many-core machine).
    extra: { session: { intra_op: { allow_spinning: process.env.FEATCACHE_ORT_SPIN === '1' ? '1' : '0' } } },
  };
}

/** Why CUDA is not usable, in words a user can act on: each missing provider file or CUDA library, and how to get it. */
function explainProviderFailure(label: string, error: unknown): string {
  const message = errorMessage(error);
  if (label.startsWith('cuda')) {
    const problems = cudaFailureReasons(checkCuda());
    if (problems.length > 0) return `${label}: ${problems.join('; ')} — ${message}`;
  }
  return `${label}: ${message}`;
}

type CreateSession = (
  model: Uint8Array | string,
  options: ort.InferenceSession.SessionOptions,
) => Promise<ort.InferenceSession>;

const createSession: CreateSession = (m, o) =>
  typeof m === 'string' ? ort.InferenceSession.create(m, o) : ort.InferenceSession.create(m, o);

/** The CPU attempt with a saved optimised graph, falling back to the model itself if that graph will not load. */
async function createCpu(
  model: Uint8Array | string,
  options: ort.InferenceSession.SessionOptions,
  optimised: CpuOptimised | undefined,
  create: CreateSession,
): Promise<{ session: ort.InferenceSession; optimised: 'loaded' | 'saved' | 'none' }> {
  if (optimised?.mode === 'load') {
    try {
      return {
        session: await create(optimised.file, { ...options, graphOptimizationLevel: 'disabled' }),
        optimised: 'loaded',
      };
    } catch {
      // A damaged or foreign file: the model itself still works.
    }
  }
  if (optimised?.mode === 'save') {
    try {
      return {
        session: await create(model, { ...options, optimizedModelFilePath: optimised.file }),
        optimised: 'saved',
      };
    } catch {
      // Could not write it (full disk, ...): fall through to a plain session.
    }
  }
  return { session: await create(model, options), optimised: 'none' };
}

export async function openSession(
  model: Uint8Array | string,
  settings: SessionSettings & { cpuOptimised?: CpuOptimised | undefined },
  create: CreateSession = createSession,
): Promise<OpenedSession> {
  // onnxruntime logs a failed CUDA provider load as an error before throwing; the throw is what we report.
  if (!process.env.FEATCACHE_ORT_LOG) ort.env.logLevel = 'fatal';
  const reasons: string[] = [];
  for (const attempt of providerPlan(settings.device)) {
    try {
      const options = sessionOptions(attempt.ep, settings.threads);
      if (attempt.label === 'cpu') {
        const cpu = await createCpu(model, options, settings.cpuOptimised, create);
        return { session: cpu.session, provider: attempt.label, fallbackReasons: reasons, optimised: cpu.optimised };
      }
      const session = await create(model, options);
      return { session, provider: attempt.label, fallbackReasons: reasons, optimised: 'none' };
    } catch (error) {
      reasons.push(explainProviderFailure(attempt.label, error));
    }
  }
  throw new FeatcacheError(
    `${optionName('device')}: no execution provider could run the model; ${reasons.join('; ')}`,
    ExitCode.failed,
  );
}

export interface InputLayout {
  name: string;
  layout: 'NCHW' | 'NHWC';
  height: number | null;
  width: number | null;
  /** A fixed batch dimension (e.g. 1) means batches are split to that size; null means any batch size. */
  fixedBatch: number | null;
}

/** Reads the image input's layout from its declared shape: channels (3) in position 1 means NCHW. */
export function inputLayout(name: string, shape: (number | string | null)[] | null): InputLayout {
  if (!shape || shape.length !== 4) {
    throw new FeatcacheError(
      `${optionName('model')}: input "${name}" has shape ${JSON.stringify(shape)}; expected a 4-D image tensor [N,3,H,W] or [N,H,W,3]`,
    );
  }
  const asNumber = (d: number | string | null | undefined) => (typeof d === 'number' && d > 0 ? d : null);
  const batch = asNumber(shape[0]);
  if (shape[1] === 3)
    return { name, layout: 'NCHW', height: asNumber(shape[2]), width: asNumber(shape[3]), fixedBatch: batch };
  if (shape[3] === 3)
    return { name, layout: 'NHWC', height: asNumber(shape[1]), width: asNumber(shape[2]), fixedBatch: batch };
  throw new FeatcacheError(
    `${optionName('model')}: input "${name}" has shape ${JSON.stringify(shape)}; expected 3 channels in position 1 (NCHW) or 3 (NHWC)`,
  );
}

/**
 * Runs one batch of `count` preprocessed images of `height`×`width` and returns [count, dim] features. Models with
 * a fixed batch size get the batch in slices of that size; the last slice is zero-padded and the padding dropped.
 */
export async function runBatch(
  session: ort.InferenceSession,
  layout: InputLayout,
  image: { height: number; width: number },
  pixels: Float32Array,
  count: number,
  outputName: string,
): Promise<{ features: Float32Array; dim: number }> {
  const perImage = 3 * image.height * image.width;
  const dims = (n: number) =>
    layout.layout === 'NCHW' ? [n, 3, image.height, image.width] : [n, image.height, image.width, 3];
  const slice = layout.fixedBatch ?? count;
  const chunks: Float32Array[] = [];
  let dim = 0;
  for (let start = 0; start < count; start += slice) {
    const n = Math.min(slice, count - start);
    let data = pixels.subarray(start * perImage, (start + n) * perImage);
    if (n < slice) {
      const padded = new Float32Array(slice * perImage);
      padded.set(data);
      data = padded;
    }
    const result = await session.run({ [layout.name]: new ort.Tensor('float32', data, dims(slice)) }, [outputName]);
    const output = result[outputName] as ort.Tensor;
    dim = Number(output.dims[1]);
    chunks.push((output.data as Float32Array).slice(0, n * dim));
    output.dispose?.();
  }
  const features = new Float32Array(count * dim);
  chunks.reduce((offset, chunk) => (features.set(chunk, offset), offset + chunk.length), 0);
  return { features, dim };
}
