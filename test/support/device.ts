/** Probing what the machine running the tests can do, so tests of "X is unavailable" skip where X works. */
import * as ort from '../../src/onnx/ort.js';
import { tinyModel } from './helpers.js';

let cuda: Promise<boolean> | undefined;

/** Whether onnxruntime opens a session on the CUDA execution provider here (probed once per process). */
export function cudaLoads(): Promise<boolean> {
  cuda ??= ort.InferenceSession.create(tinyModel({ size: 8 }), {
    executionProviders: [{ name: 'cuda', deviceId: 0 }],
    logSeverityLevel: 4,
  })
    .then(async (session) => (await session.release(), true))
    .catch(() => false);
  return cuda;
}

export const CUDA_WORKS_SKIP =
  'a CUDA execution provider loads on this machine, so the "CUDA unavailable" path cannot be exercised here';
