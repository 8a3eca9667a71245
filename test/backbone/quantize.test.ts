import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as ort from '../../src/onnx/ort.js';
import { type CalibrationBatch, collectRanges, mseRange, quantile } from '../../src/backbone/calibrate.js';
import { featureFidelity, predictionAgreement } from '../../src/backbone/fidelity.js';
import { cpuHasInt8Dot, judgeFusion, verifyFusion } from '../../src/backbone/fusion.js';
import { type GraphProto, decodeModel, encodeModel, loadModel, onnx } from '../../src/backbone/graph.js';
import {
  DEFAULT_INT8_OPTIONS,
  INT8_RECIPE,
  Int8Unsupported,
  activationParams,
  checkQuantisable,
  planActivations,
  quantiseWeights,
  quantizeModel,
  quantizeWithParams,
  uint8Params,
} from '../../src/backbone/quantize.js';
import { FEATURE_OUTPUT, resolveTap, tappedModel } from '../../src/backbone/tap.js';
import { FeatcacheError } from '../../src/errors.js';
import { mobilenetModel, needsShared, tinyModel } from '../support/helpers.js';
import { TINY_CNN_ADDS, TINY_CNN_CONVS, TINY_CNN_DIM, tinyCnn, tinyInputs } from '../support/tiny-cnn.js';

const SIZE = 32;
const tappedTiny = (bytes = tinyCnn({ size: SIZE })) => {
  const model = decodeModel(bytes, 'tiny-cnn.onnx');
  return encodeModel(tappedModel(model, resolveTap(model.graph!)));
};

async function features(model: Uint8Array, data: Float32Array, dims: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model, { graphOptimizationLevel: 'all', intraOpNumThreads: 1 });
  try {
    return (await session.run({ input: new ort.Tensor('float32', data, dims) }))[FEATURE_OUTPUT]!.data as Float32Array;
  } finally {
    await session.release();
  }
}

function batchesOf(data: Float32Array, count: number, batch: number): () => AsyncIterable<CalibrationBatch> {
  const per = data.length / count;
  return async function* () {
    for (let s = 0; s < count; s += batch) {
      const n = Math.min(batch, count - s);
      yield { data: data.slice(s * per, (s + n) * per), dims: [n, 3, SIZE, SIZE] };
    }
  };
}

describe('int8 recipe: parameters', () => {
  it('maps a Relu range to zero point 0 and an input range to an asymmetric zero point that keeps 0 exact', () => {
    assert.deepEqual(uint8Params({ min: -3, max: 5.1 }, true), { scale: 5.1 / 255, zeroPoint: 0 });
    const p = uint8Params({ min: -2, max: 2.5 }, false);
    assert.ok(Math.abs(p.scale - 4.5 / 255) < 1e-12);
    assert.equal(p.zeroPoint, Math.round(2 / p.scale));
    // The ends of the range come back within half a step after quantise → dequantise.
    for (const v of [-2, 2.5, 0]) {
      const q = Math.max(0, Math.min(255, Math.round(v / p.scale) + p.zeroPoint));
      assert.ok(Math.abs((q - p.zeroPoint) * p.scale - v) <= p.scale / 2 + 1e-9, `${v}`);
    }
    // A range that excludes 0 is widened to include it; a degenerate one gets a harmless scale.
    assert.equal(uint8Params({ min: 1, max: 3 }, false).zeroPoint, 0);
    assert.deepEqual(uint8Params({ min: 0, max: 0 }, true), { scale: 1, zeroPoint: 0 });
  });

  it('quantises weights symmetrically per output channel', () => {
    const w = Float32Array.from([0.5, -1, 0.25, 0.1, 0.02, -0.05, 0, 0, 0]);
    const { q, scales } = quantiseWeights(w, 3);
    assert.deepEqual([...scales], [Math.fround(1 / 127), Math.fround(0.1 / 127), 1]);
    assert.equal(q[1], -127);
    assert.equal(q[3], 127);
    for (let i = 0; i < w.length; i++)
      assert.ok(Math.abs(q[i]! * scales[Math.floor(i / 3)]! - w[i]!) <= scales[Math.floor(i / 3)]! / 2 + 1e-7);
  });

  it("plans a QuantizeLinear for the input, every Relu, MaxPool (with its input's parameters) and the Add inputs", () => {
    const graph = decodeModel(tappedTiny(), 't').graph as GraphProto;
    const plan = planActivations(graph);
    const roles = Object.fromEntries(plan.map((p) => [p.tensor, p.role]));
    assert.equal(roles.input, 'input');
    assert.equal(roles['/maxpool/MaxPool_output_0'], 'maxpool');
    assert.equal(plan.find((p) => p.role === 'maxpool')!.sameAs, '/relu/Relu_output_0');
    assert.equal(
      plan.filter((p) => p.role === 'relu').length,
      (graph.node ?? []).filter((n) => n.opType === 'Relu').length,
    );
    // The residual block's second conv and the downsampling conv feed Adds; convs followed by a Relu are not quantised.
    assert.equal(roles['/layer1/conv2/Conv_output_0'], 'add-input');
    assert.equal(roles['/layer2/downsample/Conv_output_0'], 'add-input');
    assert.equal(roles['/layer1/conv1/Conv_output_0'], undefined);
    // The pool stays float: its output is not planned.
    assert.equal(roles['/avgpool/GlobalAveragePool_output_0'], undefined);
    const params = activationParams(
      plan,
      new Map(plan.map((p) => [p.tensor, { min: -1, max: p.tensor === '/relu/Relu_output_0' ? 7 : 3 }])),
    );
    assert.deepEqual(params.get('/maxpool/MaxPool_output_0'), params.get('/relu/Relu_output_0'));
  });

  it('judges fusion from op counts and CPU support, naming what is missing', () => {
    const g = (ops: string[]) => ({ node: ops.map((opType) => ({ opType })) }) as GraphProto;
    const qdq = g(['Conv', 'Conv', 'Add']);
    assert.equal(judgeFusion(qdq, g(['QLinearConv', 'QLinearConv', 'QLinearAdd']), true).fused, true);
    const partial = judgeFusion(qdq, g(['QLinearConv', 'Conv', 'Add']), true);
    assert.equal(partial.fused, false);
    assert.match(partial.reason!, /only 1 of 2 Conv fused to QLinearConv; only 0 of 1 Add fused/);
    assert.equal(partial.floatConvs, 1);
    assert.match(
      judgeFusion(qdq, g(['QLinearConv', 'QLinearConv', 'QLinearAdd']), false).reason!,
      /no 8-bit dot-product instructions/,
    );
  });

  it('reads VNNI / dot-product support from cpuinfo', async () => {
    assert.equal(await cpuHasInt8Dot('flags\t: fpu avx2 avx512f avx512_vnni'), true);
    assert.equal(await cpuHasInt8Dot('Features\t: fp asimd asimddp'), true);
    assert.equal(await cpuHasInt8Dot('flags\t: fpu avx2 avx512f'), false);
  });

  it('takes percentiles like numpy and percentile ranges never exceed min/max', async () => {
    const sorted = Float32Array.from([0, 1, 2, 3, 4]);
    assert.equal(quantile(sorted, 0.5), 2);
    assert.ok(Math.abs(quantile(sorted, 0.9) - 3.6) < 1e-6);
    const model = decodeModel(tappedTiny(), 't');
    const tensors = planActivations(model.graph as GraphProto)
      .filter((p) => !p.sameAs)
      .map((p) => p.tensor);
    const data = tinyInputs(6, SIZE, 3);
    const minmax = await collectRanges(model, tensors, batchesOf(data, 6, 3)(), {
      method: 'minmax',
      percentile: 99.99,
    });
    const pct = await collectRanges(model, tensors, batchesOf(data, 6, 3)(), { method: 'percentile', percentile: 99 });
    // The input's true range, computed here directly.
    assert.ok(Math.abs(minmax.get('input')!.min - Math.min(...data)) < 1e-6);
    assert.ok(Math.abs(minmax.get('input')!.max - Math.max(...data)) < 1e-6);
    for (const t of tensors) {
      assert.ok(pct.get(t)!.max <= minmax.get(t)!.max + 1e-6 && pct.get(t)!.min >= minmax.get(t)!.min - 1e-6, t);
    }
    assert.ok(pct.get('input')!.max < minmax.get('input')!.max);
    const mse = await collectRanges(model, tensors, batchesOf(data, 6, 3)(), { method: 'mse', percentile: 99.99 });
    for (const t of tensors)
      assert.ok(mse.get(t)!.max <= minmax.get(t)!.max + 1e-6 && mse.get(t)!.min >= minmax.get(t)!.min - 1e-6, t);
  });

  it('mse ranges clip a lone outlier and lower the actual quantisation error', () => {
    // The real squared error of quantise → dequantise with uint8 parameters for a range, computed value by value.
    const realError = (values: Float32Array, range: { min: number; max: number }) => {
      const p = uint8Params(range, false);
      let sum = 0;
      for (const v of values) {
        const q = Math.max(0, Math.min(255, Math.round(v / p.scale) + p.zeroPoint));
        sum += ((q - p.zeroPoint) * p.scale - v) ** 2;
      }
      return sum;
    };
    // A million values in [-1, 1] and one at 40: min/max spends almost all 256 levels on the outlier.
    const many = Float32Array.from({ length: 1_000_000 }, (_, i) => (i / 999_999) * 2 - 1);
    const withOutlier = new Float32Array(many.length + 1);
    withOutlier.set(many);
    withOutlier[many.length] = 40;
    const observed = { min: -1, max: 40 };
    const chosen = mseRange(withOutlier, observed);
    assert.ok(chosen.max < 20 && chosen.max >= 1, JSON.stringify(chosen));
    assert.ok(realError(withOutlier, chosen) < realError(withOutlier, observed) / 2);
    // Without outliers, the observed range is (nearly) the best.
    const values = Float32Array.from({ length: 2000 }, (_, i) => (i / 1999) * 2 - 1);
    const plain = mseRange(values, { min: -1, max: 1 });
    assert.ok(plain.min <= -0.95 && plain.max >= 0.95, JSON.stringify(plain));
  });
});

describe('int8 recipe: quantised graph', () => {
  it('quantises the tiny CNN into a graph onnxruntime fully fuses, with features close to FP32', async () => {
    const tapped = tappedTiny();
    const calibration = tinyInputs(16, SIZE, 1);
    const { bytes, report } = await quantizeModel(tapped, batchesOf(calibration, 16, 4));
    assert.equal(report.recipe, INT8_RECIPE);
    assert.equal(report.convs, TINY_CNN_CONVS);
    assert.equal(report.adds, TINY_CNN_ADDS);
    const fusion = await verifyFusion(bytes, { cpuinfo: 'flags: avx512_vnni' });
    assert.equal(fusion.qlinearConv, TINY_CNN_CONVS);
    assert.equal(fusion.qlinearAdd, TINY_CNN_ADDS);
    assert.equal(fusion.floatConvs, 0);
    assert.equal(fusion.fused, true);
    // Weights are stored as int8: the quantised file holds no float Conv weights any more.
    const q = decodeModel(bytes, 'q').graph!;
    assert.ok((q.initializer ?? []).some((t) => t.dataType === onnx.TensorProto.DataType.INT8));
    assert.ok(!(q.initializer ?? []).some((t) => t.name === 'conv1.weight'));
    // Fidelity on inputs not used for calibration.
    const test = tinyInputs(24, SIZE, 99);
    const f32 = await features(tapped, test, [24, 3, SIZE, SIZE]);
    const f8 = await features(bytes, test, [24, 3, SIZE, SIZE]);
    const fidelity = featureFidelity(f32, f8, 24, TINY_CNN_DIM);
    assert.ok(fidelity.cosine.min > 0.99, JSON.stringify(fidelity));
    assert.ok(fidelity.centredCosine.median > 0.95, JSON.stringify(fidelity));
    // A perturbation that is not quantisation noise would show: features of different inputs are far apart.
    const other = featureFidelity(
      f32,
      await features(tapped, tinyInputs(24, SIZE, 5), [24, 3, SIZE, SIZE]),
      24,
      TINY_CNN_DIM,
    );
    assert.ok(other.centredCosine.median < 0.5, JSON.stringify(other));
  });

  it('rebuilds the same bytes from the recorded parameters alone, and refuses a record that lacks some', async () => {
    const tapped = tappedTiny();
    const { bytes, report } = await quantizeModel(tapped, batchesOf(tinyInputs(8, SIZE, 3), 8, 4));
    // Through JSON, as a cache's manifest keeps them.
    const recorded = JSON.parse(JSON.stringify(report.ranges)) as typeof report.ranges;
    assert.deepEqual(quantizeWithParams(tapped, recorded), bytes);
    // Other parameters give another model: the comparison above is not vacuous.
    const [first] = Object.keys(recorded);
    const nudged = { ...recorded, [first!]: { ...recorded[first!]!, scale: recorded[first!]!.scale * 1.01 } };
    assert.notDeepEqual(quantizeWithParams(tapped, nudged), bytes);
    const lacking = { ...recorded };
    delete lacking[first!];
    assert.throws(
      () => quantizeWithParams(tapped, lacking),
      (e: Error) => e instanceof Int8Unsupported && /lack 1 of the graph's \d+ activations/.test(e.message),
    );
  });

  it('refuses an already-quantised model, its own QDQ output included', async (t) => {
    const { bytes } = await quantizeModel(tappedTiny(), batchesOf(tinyInputs(4, SIZE, 1), 4, 4));
    await assert.rejects(
      quantizeModel(bytes, batchesOf(tinyInputs(4, SIZE, 1), 4, 4), { what: '--model q.onnx' }),
      (e: Error) => {
        assert.ok(e instanceof FeatcacheError);
        assert.match(
          e.message,
          /^int8: --model q\.onnx is already quantised \(has DequantizeLinear, QuantizeLinear\); run it without int8 — /,
        );
        return true;
      },
    );
    const skip = needsShared(mobilenetModel);
    if (skip) return t.skip(skip);
    const { model } = await loadModel(mobilenetModel);
    assert.throws(
      () => checkQuantisable(model, 'mobilenetv2-12-int8.onnx'),
      /mobilenetv2-12-int8\.onnx is already quantised \(has .*QLinearConv/,
    );
  });

  it('reports models outside the recipe as unsupported (an FP32 fallback), naming the ops', () => {
    for (const [bytes, pattern] of [
      [
        tinyModel({ pool: 'ReduceMean13', size: 8 }),
        /unsupported ops MatMul, ReduceMean \(the int8 recipe covers Conv\/Gemm/,
      ],
      [tinyCnn({ opset: 11 }), /opset 11 < 13/],
    ] as const) {
      const model = decodeModel(bytes, 'm');
      assert.throws(
        () => checkQuantisable(model, 'm'),
        (e: Error) => e instanceof Int8Unsupported && pattern.test(e.message),
      );
    }
  });

  it('has frozen defaults', () => {
    assert.ok(Object.isFrozen(DEFAULT_INT8_OPTIONS));
    assert.equal(DEFAULT_INT8_OPTIONS.calibrationRanges, 'mse');
  });
});

describe('fidelity measures', () => {
  it('centred cosine removes the shared component that plain cosine rewards', () => {
    // Two rows that share a large common offset but differ in opposite directions around it.
    const a = Float32Array.from([10, 10.5, 10, 9.5]);
    const b = Float32Array.from([10, 9.5, 10, 10.5]);
    const f = featureFidelity(a, b, 2, 2);
    assert.ok(f.cosine.min > 0.99);
    assert.ok(f.centredCosine.median < -0.99);
    assert.equal(predictionAgreement(Float32Array.from([1, 0, 0, 1]), Float32Array.from([2, 1, 1, 0]), 2, 2), 0.5);
  });
});
