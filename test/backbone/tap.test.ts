import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as ort from '../../src/onnx/ort.js';
import { type GraphProto, decodeModel, loadModel, onnx } from '../../src/backbone/graph.js';
import {
  DEFAULT_TAP,
  FEATURE_OUTPUT,
  modulePathOfNode,
  poolCandidates,
  resolveTap,
  tapModel,
} from '../../src/backbone/tap.js';
import { FeatcacheError } from '../../src/errors.js';
import { mobilenetModel, needsShared, tinyModel } from '../support/helpers.js';
import {
  decode,
  exposeTensor,
  initializerScalar,
  nodeOfType,
  twoPoolModel,
  twoPoolReference,
} from '../support/models.js';

async function runTapped(bytes: Uint8Array, input: Float32Array, dims: number[]): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(bytes);
  const out = await session.run({ input: new ort.Tensor('float32', input, dims) });
  await session.release();
  return out[FEATURE_OUTPUT]!;
}

describe('tap', () => {
  for (const pool of ['GlobalAveragePool', 'ReduceMean13', 'ReduceMean18'] as const) {
    it(`finds a ${pool} pool and returns per-channel means as [N, C]`, async () => {
      const model = decodeModel(tinyModel({ pool, size: 8 }), 'tiny.onnx');
      const tap = resolveTap(model.graph!);
      assert.equal(tap.tensor, 'pooled');
      assert.equal(tap.matchedBy, 'auto-pool');
      const input = new Float32Array(2 * 3 * 64).map((_, i) => (i % 64) - 10);
      const out = await runTapped(tapModel(model, tap), input, [2, 3, 8, 8]);
      assert.deepEqual(out.dims, [2, 3]);
      // Relu then mean over 64 values -10..53: (sum of 1..53) / 64.
      const expected = (53 * 54) / 2 / 64;
      for (const v of out.data as Float32Array) assert.ok(Math.abs(v - expected) < 1e-4);
    });
  }

  for (const spec of ['avgpool', 'auto']) {
    it(`--tap ${spec} takes the pool nearest the output when an earlier pool also reaches it`, async () => {
      const size = 6;
      const model = decodeModel(twoPoolModel(size), 'two-pools.onnx');
      const tap = resolveTap(model.graph!, spec);
      assert.equal(tap.node, '/avgpool/GlobalAveragePool');
      assert.equal(tap.tensor, 'late');
      // Per-channel means m spread over (0.1, 0.9), so the late pool (m²) and the early pool (m) differ clearly;
      // the sine dips below zero, so the Relu matters too.
      const plane = size * size;
      const input = new Float32Array(2 * 3 * plane).map(
        (_, i) => 0.15 * (Math.floor(i / plane) + 1) + 0.3 * Math.sin(i),
      );
      const reference = twoPoolReference(input, 2, size);
      const got = (await runTapped(tapModel(model, tap), input, [2, 3, size, size])).data as Float32Array;
      assert.equal(got.length, 6);
      for (let k = 0; k < 6; k++) {
        assert.ok(
          Math.abs(reference.late[k]! - reference.early[k]!) > 0.05,
          'the two pools are told apart by this input',
        );
        assert.ok(
          Math.abs(got[k]! - reference.late[k]!) < 1e-5,
          `feature ${k}: ${got[k]} vs m² = ${reference.late[k]}`,
        );
      }
    });
  }

  it('counts ReduceMean as a pool only over the two spatial axes, NCHW or NHWC, from an attribute or an input', () => {
    const reduceMean = (axes: number[] | null, viaInput = false): GraphProto => ({
      node: [
        {
          name: 'r',
          opType: 'ReduceMean',
          input: viaInput ? ['x', 'axes'] : ['x'],
          output: ['y'],
          attribute: axes && !viaInput ? [{ name: 'axes', ints: axes }] : [],
        },
      ],
      initializer: viaInput && axes ? [{ name: 'axes', dataType: 7, dims: [axes.length], int64Data: axes }] : [],
      output: [{ name: 'y' }],
    });
    for (const axes of [
      [2, 3],
      [3, 2],
      [-2, -1],
      [-1, -2],
      [1, 2],
      [2, 1],
      [-3, -2],
    ]) {
      assert.deepEqual(
        poolCandidates(reduceMean(axes)).map((c) => c.opType),
        ['ReduceMean'],
        `axes ${String(axes)}`,
      );
      assert.deepEqual(
        poolCandidates(reduceMean(axes, true)).map((c) => c.opType),
        ['ReduceMean'],
        `axes ${String(axes)} as an input`,
      );
    }
    for (const axes of [[1], [3], [1, 2, 3], [0, 1], [-1], null]) {
      assert.deepEqual(poolCandidates(reduceMean(axes)), [], `axes ${String(axes)} is not a spatial pool`);
    }
  });

  it('lists pools nearest the output first, with their distance, and skips a pool that reaches no output', () => {
    const graph: GraphProto = {
      node: [
        { name: 'dangling', opType: 'GlobalAveragePool', input: ['x'], output: ['d'] },
        { name: 'early', opType: 'GlobalAveragePool', input: ['x'], output: ['e'] },
        { name: 'relu', opType: 'Relu', input: ['e'], output: ['f'] },
        { name: 'late', opType: 'QLinearGlobalAveragePool', input: ['f', 's', 'z', 's2', 'z2'], output: ['l'] },
        { name: 'out', opType: 'Identity', input: ['l'], output: ['y'] },
      ],
      output: [{ name: 'y' }],
    };
    assert.deepEqual(
      poolCandidates(graph).map((c) => [c.node, c.distanceToOutput]),
      [
        ['late', 1],
        ['early', 3],
        ['dangling', Number.POSITIVE_INFINITY],
      ],
    );
    const withoutLate = graph
      .node!.filter((n) => n.name !== 'late')
      .map((n) => (n.name === 'out' ? { ...n, input: ['f'] } : n));
    const tap = resolveTap({ ...graph, node: withoutLate });
    assert.equal(tap.node, 'early', 'the connected pool, not the dangling one listed first');
    assert.equal(tap.dequantize, null);
    assert.deepEqual(
      resolveTap(graph).dequantize,
      { scale: 's2', zeroPoint: 'z2' },
      'a quantised pool is dequantised with its output scale and zero point',
    );
  });

  it("matches PyTorch module paths by prefix and call suffix, taking the module's last node", () => {
    const graph: GraphProto = {
      node: [
        { name: '/layer4/layer4.0/conv1/Conv', opType: 'Conv', input: ['x'], output: ['a'] },
        { name: '/layer4/layer4.1/relu/Relu', opType: 'Relu', input: ['a'], output: ['b'] },
        { name: '/layer4/layer4.1/relu_1/Relu', opType: 'Relu', input: ['b'], output: ['c'] },
        { name: '/layer40/conv/Conv', opType: 'Conv', input: ['c'], output: ['d'] },
        { name: 'Identity_7', opType: 'Identity', input: ['d'], output: ['y'] },
      ],
      output: [{ name: 'y' }],
    };
    assert.equal(resolveTap(graph, 'layer4').tensor, 'c', 'layer4, not layer40');
    assert.equal(resolveTap(graph, 'layer4.1.relu').tensor, 'c', "relu_1 is relu's second call");
    assert.equal(resolveTap(graph, 'layer4.0').tensor, 'a');
    assert.equal(resolveTap(graph, 'layer40').tensor, 'd');
    assert.equal(resolveTap(graph, 'layer4.0').matchedBy, 'module');
    assert.equal(modulePathOfNode('/features/features.18/features.18.2/Clip'), 'features.18.2');
    assert.equal(modulePathOfNode('/Flatten'), null);
    assert.throws(
      () => resolveTap(graph, 'layer4.1.conv'),
      /^FeatcacheError: --tap layer4\.1\.conv: no node, tensor or module of that name; this model has no global average pool; module scopes: layer4, layer40\./,
    );
    const withPool = decodeModel(tinyModel({ size: 8 }), 'tiny.onnx').graph!;
    assert.throws(
      () => resolveTap(withPool, 'layer9'),
      /--tap layer9: .*; global average pools: \/avgpool\/GlobalAveragePool \(GlobalAveragePool\)\. Pass one of them/,
    );
    assert.throws(
      () => resolveTap(decodeModel(tinyModel({ pool: 'none', size: 8 }), 'tiny.onnx').graph!, 'avgpool'),
      /^FeatcacheError: --tap avgpool: .*no global average pool/,
    );
  });

  it('defaults to --tap avgpool, which means the pool finder, not a module called avgpool', () => {
    assert.equal(DEFAULT_TAP, 'avgpool');
    const graph = decodeModel(twoPoolModel(4), 'two-pools.onnx').graph!;
    assert.equal(resolveTap(graph).matchedBy, 'auto-pool');
    assert.equal(resolveTap(graph, 'avgpool').matchedBy, 'auto-pool');
    assert.equal(resolveTap(graph, '/se/GlobalAveragePool').matchedBy, 'node');
    // With no pool at all, `avgpool` falls back to a module of that name (e.g. a max pool someone called avgpool).
    const maxPool: GraphProto = {
      node: [
        { name: '/avgpool/GlobalMaxPool', opType: 'GlobalMaxPool', input: ['x'], output: ['m'] },
        {
          name: '/fc/ReduceSum',
          opType: 'ReduceSum',
          input: ['m'],
          output: ['y'],
          attribute: [{ name: 'axes', ints: [2, 3] }],
        },
      ],
      output: [{ name: 'y' }],
    };
    assert.deepEqual(poolCandidates(maxPool), [], 'a ReduceSum over H, W is not an average pool');
    assert.equal(resolveTap(maxPool, 'avgpool').tensor, 'm');
    assert.throws(
      () => resolveTap(maxPool, 'auto'),
      /--tap auto: .*no global average pool; module scopes: avgpool, fc\./,
    );
  });

  it('finds the pool among unnamed nodes', () => {
    const graph: GraphProto = {
      node: [
        { name: '', opType: 'Relu', input: ['x'], output: ['r'] },
        { name: '', opType: 'GlobalAveragePool', input: ['r'], output: ['p'] },
        { name: '', opType: 'Flatten', input: ['p'], output: ['y'] },
      ],
      output: [{ name: 'y' }],
    };
    const tap = resolveTap(graph);
    assert.deepEqual([tap.tensor, tap.opType, tap.matchedBy], ['p', 'GlobalAveragePool', 'auto-pool']);
  });

  it('strips only a trailing call suffix from module paths', () => {
    const graph: GraphProto = {
      node: [
        { name: '/stage_1/stage_1.relu_12/Relu', opType: 'Relu', input: ['x'], output: ['a'] },
        { name: '/stage_2/stage_2.conv/Conv', opType: 'Conv', input: ['a'], output: ['y'] },
      ],
      output: [{ name: 'y' }],
    };
    assert.equal(resolveTap(graph, 'stage_1.relu').tensor, 'a');
    assert.equal(resolveTap(graph, 'stage_1').tensor, 'a');
    assert.throws(() => resolveTap(graph, 'stage.relu_12'), /no node, tensor or module of that name/);
  });

  it('error hints list every pool, and only short or underscore-free module scopes, at most twelve', () => {
    const names = [
      'conv',
      'short_1',
      'averyveryverylongnamewithoutunderscore',
      'onnx_generated_scope_name_77',
      'twenty_characters_xy',
      ...[...Array(12).keys()].map((k) => `m${k}`),
    ];
    const graph: GraphProto = {
      node: names.map((m, k) => ({
        name: `/${m}/Relu`,
        opType: 'Relu',
        input: [k ? `t${k - 1}` : 'x'],
        output: [`t${k}`],
      })),
      output: [{ name: `t${names.length - 1}` }],
    };
    assert.throws(
      () => resolveTap(graph, 'nothing'),
      (e: Error) =>
        e.message.includes(
          'module scopes: conv, short_1, averyveryverylongnamewithoutunderscore, m0, m1, m2, m3, m4, m5, m6, m7, m8. Pass',
        ),
    );
    assert.throws(
      () =>
        resolveTap(
          { node: [{ name: 'Relu_0', opType: 'Relu', input: ['x'], output: ['y'] }], output: [{ name: 'y' }] },
          'nothing',
        ),
      /module scopes: \(none\)\./,
    );
    const twoPools = decodeModel(twoPoolModel(4), 'two-pools.onnx').graph!;
    assert.throws(
      () => resolveTap(twoPools, 'layer9'),
      (e: Error) =>
        e.message.includes(
          'global average pools: /avgpool/GlobalAveragePool (GlobalAveragePool), /se/GlobalAveragePool (GlobalAveragePool). Pass',
        ),
    );
  });

  it('keeps every real graph input, even one only the dropped classifier used', () => {
    const model = decodeModel(tinyModel({ size: 4 }), 'tiny.onnx');
    model.graph!.input!.push(
      onnx.ValueInfoProto.create({
        name: 'bias',
        type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 4 }] } } },
      }),
    );
    model.graph!.node!.push(
      onnx.NodeProto.create({ name: '/fc/Add', opType: 'Add', input: ['logits', 'bias'], output: ['biased'] }),
    );
    model.graph!.output = [onnx.ValueInfoProto.create({ name: 'biased' })];
    const tapped = decodeModel(tapModel(model, resolveTap(model.graph!)), 'tapped');
    assert.deepEqual(
      tapped.graph!.input!.map((i) => i.name),
      ['input', 'bias'],
    );
    assert.ok(!tapped.graph!.node!.some((n) => n.name === '/fc/Add'));
  });

  it('taps an unpooled tensor flattened to [N, C·H·W], and keeps only the inputs, initializers and value infos it uses', async () => {
    const model = decodeModel(tinyModel({ size: 4 }), 'tiny.onnx');
    // Older exporters also list initializers as graph inputs, and record shapes of intermediate tensors.
    model.graph!.input!.push(
      onnx.ValueInfoProto.create({
        name: 'fc.weight',
        type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 3 }, { dimValue: 4 }] } } },
      }),
    );
    model.graph!.valueInfo = [
      onnx.ValueInfoProto.create({ name: '/features/Relu_output_0' }),
      onnx.ValueInfoProto.create({ name: 'flat' }),
    ];
    const tapped = decodeModel(tapModel(model, resolveTap(model.graph!, '/features/Relu')), 'tapped');
    assert.deepEqual(
      tapped.graph!.input!.map((i) => i.name),
      ['input'],
    );
    assert.deepEqual(
      tapped.graph!.initializer!.map((i) => i.name),
      [],
    );
    assert.deepEqual(
      tapped.graph!.valueInfo!.map((v) => v.name),
      ['/features/Relu_output_0'],
    );
    assert.deepEqual(
      tapped.graph!.node!.map((n) => n.name),
      ['/features/Relu', 'featcache/Flatten'],
      'what featcache added is named so',
    );
    const output = tapped.graph!.output![0]!.type!.tensorType!;
    assert.equal(output.elemType, onnx.TensorProto.DataType.FLOAT);
    assert.deepEqual(
      output.shape!.dim!.map((d) => d.dimParam),
      ['N', 'C'],
    );
    const input = new Float32Array(2 * 3 * 16).map((_, i) => (i % 5) - 2);
    const out = await runTapped(tapModel(model, resolveTap(model.graph!, '/features/Relu')), input, [2, 3, 4, 4]);
    assert.deepEqual(out.dims, [2, 48]);
    assert.deepEqual(
      [...(out.data as Float32Array)],
      [...input].map((v) => Math.max(0, v)),
    );
  });

  it('drops the classifier: the tapped graph has no MatMul and one output', () => {
    const model = decodeModel(tinyModel({ size: 8 }), 'tiny.onnx');
    const tapped = decodeModel(tapModel(model, resolveTap(model.graph!)), 'tapped');
    assert.deepEqual(
      tapped.graph!.output!.map((o) => o.name),
      [FEATURE_OUTPUT],
    );
    assert.ok(!tapped.graph!.node!.some((n) => n.opType === 'MatMul'));
    assert.ok(!tapped.graph!.initializer!.some((t) => t.name === 'fc.weight'));
  });

  it('accepts a node name, a tensor name and a PyTorch module path', () => {
    const graph = decodeModel(tinyModel({ size: 8 }), 'tiny.onnx').graph!;
    assert.equal(resolveTap(graph, '/features/Relu').tensor, '/features/Relu_output_0');
    assert.equal(resolveTap(graph, '/features/Relu_output_0').matchedBy, 'tensor');
    const byModule = resolveTap(graph, 'features');
    assert.equal(byModule.matchedBy, 'module');
    assert.equal(byModule.tensor, '/features/Relu_output_0');
  });

  it('maps torch.onnx node names to module paths', () => {
    assert.equal(modulePathOfNode('/layer4/layer4.2/relu_2/Relu'), 'layer4.2.relu_2');
    assert.equal(modulePathOfNode('/avgpool/GlobalAveragePool'), 'avgpool');
    assert.equal(modulePathOfNode('Conv_0'), null);
  });

  it('lists candidates when nothing can be tapped', () => {
    const graph = decodeModel(tinyModel({ pool: 'none', size: 8 }), 'tiny.onnx').graph!;
    assert.throws(
      () => resolveTap(graph, 'auto'),
      (e: FeatcacheError) => /no global average pool/.test(e.message) && /features/.test(e.message),
    );
    assert.throws(
      () => resolveTap(graph, 'layer9'),
      (e: FeatcacheError) => e.message.startsWith('--tap layer9:'),
    );
  });

  it('refuses a file that is not ONNX with a one-line error', () => {
    assert.throws(
      () => decodeModel(Buffer.from('hello, I am text'), 'notes.onnx'),
      (e: FeatcacheError) => /^model notes.onnx: not an ONNX model/.test(e.message),
    );
  });

  it(
    "MobileNetV2-int8: features are the pool's uint8 output dequantised with its output scale and zero point",
    { skip: needsShared(mobilenetModel) },
    async () => {
      const { model, bytes } = await loadModel(mobilenetModel);
      const tap = resolveTap(model.graph!);
      assert.equal(tap.opType, 'QLinearGlobalAveragePool');
      // The reference reads the pool node and its initializers straight from the file, not through the tap.
      const reference = decode(bytes);
      const pool = nodeOfType(reference, 'QLinearGlobalAveragePool');
      const [, inScale, inZeroPoint, outScale, outZeroPoint] = pool.input;
      const scale = initializerScalar(reference, outScale!);
      const zeroPoint = initializerScalar(reference, outZeroPoint!);
      assert.ok(
        Math.abs(initializerScalar(reference, inScale!) - scale) > 1e-3 ||
          initializerScalar(reference, inZeroPoint!) !== zeroPoint,
        'input and output quantisation differ, so using the wrong pair would show',
      );
      const input = new Float32Array(2 * 3 * 224 * 224).map((_, i) => Math.sin(i / 1000) * (i < 3 * 224 * 224 ? 1 : 2));
      const dims = [2, 3, 224, 224];
      const untapped = await ort.InferenceSession.create(
        exposeTensor(bytes, pool.output[0]!, onnx.TensorProto.DataType.UINT8),
      );
      const raw = (await untapped.run({ input: new ort.Tensor('float32', input, dims) }))[pool.output[0]!]!;
      await untapped.release();
      assert.equal(raw.type, 'uint8');
      const quantised = raw.data as Uint8Array;
      assert.equal(quantised.length, 2 * 1280);
      assert.ok(new Set(quantised).size > 20, 'the pooled values are spread, not constant');
      const out = await runTapped(tapModel(model, tap), input, dims);
      assert.deepEqual(out.dims, [2, 1280]);
      assert.equal(out.type, 'float32');
      const got = out.data as Float32Array;
      let worst = 0;
      for (let i = 0; i < got.length; i++)
        worst = Math.max(worst, Math.abs(got[i]! - (quantised[i]! - zeroPoint) * scale));
      assert.ok(worst <= 1e-6, `max abs diff from (q - ${zeroPoint}) × ${scale}: ${worst}`);
    },
  );
});
