import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type * as ort from 'onnxruntime-node';
import { checkCuda, cudaFailureReasons } from '../../src/backbone/cuda-libs.js';
import { decodeModel } from '../../src/backbone/graph.js';
import {
  inputLayout,
  openSession,
  parseDevice,
  providerPlan,
  runBatch,
  sessionOptions,
} from '../../src/backbone/session.js';
import { FEATURE_OUTPUT, resolveTap, tapModel } from '../../src/backbone/tap.js';
import { FeatcacheError } from '../../src/errors.js';
import { CUDA_WORKS_SKIP, cudaLoads } from '../support/device.js';
import { tinyModel } from '../support/helpers.js';

describe('session', () => {
  it('parses --device values and rejects others with the valid list', () => {
    assert.deepEqual(parseDevice('cuda:1'), { kind: 'cuda', deviceId: 1 });
    assert.deepEqual(parseDevice('cuda'), { kind: 'cuda', deviceId: 0 });
    assert.deepEqual(parseDevice('cpu'), { kind: 'cpu' });
    assert.throws(
      () => parseDevice('gpu'),
      /^FeatcacheError: device: expected one of "auto", "cpu", "cuda", "cuda:N", got "gpu"/,
    );
  });

  it('plans CUDA then CPU for auto, and passes the device id to the CUDA EP', () => {
    assert.deepEqual(
      providerPlan({ kind: 'auto' }).map((p) => p.label),
      ['cuda:0', 'cpu'],
    );
    assert.deepEqual(
      providerPlan({ kind: 'cuda', deviceId: 3 }).map((p) => p.ep),
      [{ name: 'cuda', deviceId: 3 }],
    );
    const options = sessionOptions({ name: 'cuda', deviceId: 2 }, 4);
    assert.deepEqual(options.executionProviders, [{ name: 'cuda', deviceId: 2 }]);
    assert.equal(options.intraOpNumThreads, 4);
    assert.equal(sessionOptions('cpu', 0).intraOpNumThreads, undefined);
  });

  it('falls back to CPU and keeps the reason CUDA failed', async () => {
    const tried: unknown[] = [];
    const fake = async (_m: Uint8Array | string, o: ort.InferenceSession.SessionOptions) => {
      tried.push(o.executionProviders?.[0]);
      if (typeof o.executionProviders?.[0] === 'object')
        throw new Error('Failed to load shared library libonnxruntime_providers_cuda.so');
      return {} as ort.InferenceSession;
    };
    const opened = await openSession(new Uint8Array(), { device: { kind: 'auto' }, threads: 1 }, fake);
    assert.equal(opened.provider, 'cpu');
    assert.equal(opened.fallbackReasons.length, 1);
    assert.match(
      opened.fallbackReasons[0]!,
      /^cuda:0: .*Failed to load shared library libonnxruntime_providers_cuda\.so$/,
    );
    // Each missing piece is named with how to get it (on a machine without a driver, just that).
    for (const problem of cudaFailureReasons(checkCuda()))
      assert.ok(opened.fallbackReasons[0]!.includes(problem), problem);
    assert.deepEqual(tried, [{ name: 'cuda', deviceId: 0 }, 'cpu']);
  });

  it('--device cuda fails with one line when CUDA is unavailable here', async (t) => {
    if (await cudaLoads()) return t.skip(CUDA_WORKS_SKIP);
    await assert.rejects(
      openSession(tinyModel({ size: 8 }), { device: { kind: 'cuda', deviceId: 0 }, threads: 1 }),
      (e: FeatcacheError) =>
        e.message.startsWith('device: no execution provider could run the model; cuda:0:') && !e.message.includes('\n'),
    );
  });

  it('runs fixed-batch models (batch 1) on batches of any size', async () => {
    const model = decodeModel(tinyModel({ size: 8, batch: 1 }), 'tiny.onnx');
    const opened = await openSession(tapModel(model, resolveTap(model.graph!)), {
      device: { kind: 'cpu' },
      threads: 1,
    });
    const layout = inputLayout('input', [1, 3, 8, 8]);
    assert.equal(layout.fixedBatch, 1);
    const pixels = new Float32Array(3 * 3 * 64).map((_, i) => Math.floor(i / 64));
    const { features, dim } = await runBatch(
      opened.session,
      layout,
      { height: 8, width: 8 },
      pixels,
      3,
      FEATURE_OUTPUT,
    );
    assert.equal(dim, 3);
    assert.deepEqual([...features], [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('reads NHWC inputs and rejects non-image inputs', () => {
    assert.equal(inputLayout('x', ['N', 224, 224, 3]).layout, 'NHWC');
    assert.throws(() => inputLayout('x', ['N', 10]), /expected a 4-D image tensor/);
  });
});
