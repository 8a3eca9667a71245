/**
 * A tiny ResNet-shaped CNN with seeded random weights, made of exactly the ops the int8 recipe covers:
 * Conv(+bias) → Relu → MaxPool → residual block (Add with identity) → downsampling block (Add with a 1×1 Conv)
 * → GlobalAveragePool → Flatten → Gemm. 6 Conv, 2 Add; small enough to quantise and run in milliseconds.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { decodeModel, encodeModel, onnx } from '../../src/backbone/graph.js';
import { inputLayout } from '../../src/backbone/session.js';
import { resolveTap, tappedModel } from '../../src/backbone/tap.js';
import { sha256Bytes } from '../../src/util/fsx.js';
import { seededRandom } from '../../src/util/random.js';

export const TINY_CNN_CONVS = 6;
export const TINY_CNN_ADDS = 2;
export const TINY_CNN_DIM = 16;

export function tinyCnn(options: { size?: number; seed?: number; opset?: number } = {}): Uint8Array {
  const size = options.size ?? 32;
  const random = seededRandom(options.seed ?? 7);
  const normal = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const initializers: ReturnType<typeof onnx.TensorProto.create>[] = [];
  const nodes: ReturnType<typeof onnx.NodeProto.create>[] = [];
  const ints = (name: string, values: number[]) =>
    onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: values });
  const int = (name: string, value: number) =>
    onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: value });
  const floats = (name: string, dims: number[], scale: number) => {
    const n = dims.reduce((a, b) => a * b, 1);
    initializers.push(
      onnx.TensorProto.create({
        name,
        dataType: onnx.TensorProto.DataType.FLOAT,
        dims,
        floatData: Array.from({ length: n }, () => normal() * scale),
      }),
    );
    return name;
  };
  const conv = (name: string, x: string, cin: number, cout: number, k: number, stride: number) => {
    const w = floats(`${name}.weight`, [cout, cin, k, k], Math.sqrt(2 / (cin * k * k)));
    const b = floats(`${name}.bias`, [cout], 0.1);
    const out = `/${name}/Conv_output_0`;
    const pad = (k - 1) / 2;
    nodes.push(
      onnx.NodeProto.create({
        name: `/${name}/Conv`,
        opType: 'Conv',
        input: [x, w, b],
        output: [out],
        attribute: [
          ints('kernel_shape', [k, k]),
          ints('strides', [stride, stride]),
          ints('pads', [pad, pad, pad, pad]),
          ints('dilations', [1, 1]),
          int('group', 1),
        ],
      }),
    );
    return out;
  };
  const relu = (name: string, x: string) => {
    const out = `/${name}/Relu_output_0`;
    nodes.push(onnx.NodeProto.create({ name: `/${name}/Relu`, opType: 'Relu', input: [x], output: [out] }));
    return out;
  };
  const add = (name: string, a: string, b: string) => {
    const out = `/${name}/Add_output_0`;
    nodes.push(onnx.NodeProto.create({ name: `/${name}/Add`, opType: 'Add', input: [a, b], output: [out] }));
    return out;
  };
  const r1 = relu('relu', conv('conv1', 'input', 3, 8, 3, 2));
  nodes.push(
    onnx.NodeProto.create({
      name: '/maxpool/MaxPool',
      opType: 'MaxPool',
      input: [r1],
      output: ['/maxpool/MaxPool_output_0'],
      attribute: [ints('kernel_shape', [3, 3]), ints('strides', [2, 2]), ints('pads', [1, 1, 1, 1])],
    }),
  );
  const p = '/maxpool/MaxPool_output_0';
  const b1 = relu(
    'layer1/relu_2',
    add('layer1', conv('layer1/conv2', relu('layer1/relu', conv('layer1/conv1', p, 8, 8, 3, 1)), 8, 8, 3, 1), p),
  );
  const main = conv('layer2/conv2', relu('layer2/relu', conv('layer2/conv1', b1, 8, 16, 3, 2)), 16, 16, 3, 1);
  const b2 = relu('layer2/relu_2', add('layer2', main, conv('layer2/downsample', b1, 8, 16, 1, 2)));
  nodes.push(
    onnx.NodeProto.create({
      name: '/avgpool/GlobalAveragePool',
      opType: 'GlobalAveragePool',
      input: [b2],
      output: ['/avgpool/GlobalAveragePool_output_0'],
    }),
  );
  nodes.push(
    onnx.NodeProto.create({
      name: '/Flatten',
      opType: 'Flatten',
      input: ['/avgpool/GlobalAveragePool_output_0'],
      output: ['/Flatten_output_0'],
      attribute: [int('axis', 1)],
    }),
  );
  floats('fc.weight', [4, TINY_CNN_DIM], 0.3);
  floats('fc.bias', [4], 0.1);
  nodes.push(
    onnx.NodeProto.create({
      name: '/fc/Gemm',
      opType: 'Gemm',
      input: ['/Flatten_output_0', 'fc.weight', 'fc.bias'],
      output: ['logits'],
      attribute: [int('transB', 1)],
    }),
  );
  const tensorType = (dim: object[]) => ({ tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim } } });
  return encodeModel(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: options.opset ?? 17 }],
      graph: {
        name: 'tiny-cnn',
        node: nodes,
        initializer: initializers,
        input: [
          {
            name: 'input',
            type: tensorType([{ dimParam: 'N' }, { dimValue: 3 }, { dimValue: size }, { dimValue: size }]),
          },
        ],
        output: [{ name: 'logits', type: tensorType([{ dimParam: 'N' }, { dimValue: 4 }]) }],
      },
    }),
  );
}

export async function writeTinyCnn(file: string, options: Parameters<typeof tinyCnn>[0] = {}): Promise<string> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await fsp.writeFile(file, tinyCnn(options));
  return file;
}

/** Seeded image-like inputs, [count,3,size,size], roughly in the range of ImageNet-normalised pixels. */
export function tinyInputs(count: number, size: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  const data = new Float32Array(count * 3 * size * size);
  // Smooth-ish patterns plus noise, so activations vary like images' do rather than like white noise.
  for (let n = 0; n < count; n++) {
    const fx = random() * 0.5;
    const fy = random() * 0.5;
    const phase = random() * 6;
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          data[((n * 3 + c) * size + y) * size + x] = 1.5 * Math.sin(fx * x + fy * y + phase + c) + (random() - 0.5);
        }
      }
    }
  }
  return data;
}

/** A tiny CNN file as int8's `ensureInt8Model` takes its source: bytes' sha256, tap, tapped graph, input layout. */
export async function tinySource(file: string, size: number) {
  const bytes = await fsp.readFile(file);
  const model = decodeModel(bytes, file);
  const tap = resolveTap(model.graph!);
  const tapped = encodeModel(tappedModel(model, tap));
  return {
    file,
    sha256: sha256Bytes(bytes),
    tap,
    tapped: () => Promise.resolve(tapped),
    input: inputLayout('input', [null, 3, size, size]),
  };
}
