/** Shared test support: locating ../shared, generating images and tiny ONNX models, running the CLI. */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import * as zlib from 'node:zlib';
import { encodeModel, onnx } from '../../src/backbone/graph.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Repository root (tests run from dist/test/support). */
export const repoRoot = path.resolve(here, '../../..');
// Derived models (hashes, tapped, int8, optimised graphs) go to featcache's cache folder: one per test process,
// never the user's ~/.cache, and inherited by the CLI processes tests spawn.
process.env.FEATCACHE_CACHE_DIR ??= path.join(os.tmpdir(), `featcache-test-cache-${process.pid}`);
export const cliPath = path.join(repoRoot, 'dist/src/cli.js');
/** ../shared beside the checkout, or FEATCACHE_SHARED_DIR (e.g. for `npm run mutate`, whose sandbox sits elsewhere). */
export const sharedDir = path.resolve(process.env.FEATCACHE_SHARED_DIR ?? path.join(repoRoot, '../shared'));
export const resnetDir = path.join(sharedDir, 'fixtures/resnet50-tv-seed0');
export const resnetModel = path.join(resnetDir, 'model.onnx');
export const mobilenetModel = path.join(sharedDir, 'models/mobilenetv2-12-int8.onnx');
export const hymenoptera = path.join(sharedDir, 'data/hymenoptera_data');

/** `skip` option for tests that need ../shared: a clear reason instead of a silent pass. */
export function needsShared(...files: string[]): string | false {
  const missing = files.find((f) => !fs.existsSync(f));
  return missing
    ? `needs ${path.relative(sharedDir, missing)} from the shared data folder ${sharedDir} (absent here; set FEATCACHE_SHARED_DIR to use another)`
    : false;
}

export async function tempDir(prefix = 'featcache-test-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A deterministic RGB image whose pixels depend on `seed`, so different seeds give different features. */
export async function writeImage(
  file: string,
  seed: number,
  options: { width?: number; height?: number; format?: 'jpeg' | 'png' | 'webp' | 'tiff' | 'gif' } = {},
): Promise<void> {
  const width = options.width ?? 64;
  const height = options.height ?? 48;
  const data = Buffer.alloc(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * (seed + 3) + seed * 41 + ((i / 3) | 0) * (seed % 7)) % 256;
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const image = sharp(data, { raw: { width, height, channels: 3 } });
  const format = options.format ?? 'jpeg';
  await image.toFormat(format, format === 'jpeg' ? { quality: 95 } : {}).toFile(file);
}

/** An ImageFolder tree: root/<split>/<class>/<n>.jpg (or root/<class>/... without splits). */
export async function writeImageFolder(root: string, layout: Record<string, Record<string, number>>): Promise<void> {
  let seed = 1;
  for (const [split, classes] of Object.entries(layout)) {
    for (const [cls, count] of Object.entries(classes)) {
      for (let i = 0; i < count; i++) await writeImage(path.join(root, split, cls, `img${i}.jpg`), seed++);
    }
  }
}

type TinyPool = 'GlobalAveragePool' | 'ReduceMean13' | 'ReduceMean18' | 'none';

/**
 * A tiny classifier: input [N,3,S,S] → pool → Flatten → MatMul(3×4) → logits. Its pooled feature is the
 * per-channel mean of the preprocessed image: cheap to run and different for different images.
 */
export function tinyModel(
  options: { pool?: TinyPool; batch?: number | 'N'; size?: number; layout?: 'NCHW' | 'NHWC' } = {},
): Uint8Array {
  const pool = options.pool ?? 'GlobalAveragePool';
  const size = options.size ?? 224;
  const batchDim =
    options.batch === undefined || options.batch === 'N' ? { dimParam: 'N' } : { dimValue: options.batch };
  const nchw = (options.layout ?? 'NCHW') === 'NCHW';
  const dims = nchw
    ? [batchDim, { dimValue: 3 }, { dimValue: size }, { dimValue: size }]
    : [batchDim, { dimValue: size }, { dimValue: size }, { dimValue: 3 }];
  const nodes: ReturnType<typeof onnx.NodeProto.create>[] = [];
  const initializers: ReturnType<typeof onnx.TensorProto.create>[] = [];
  const ints = (name: string, values: number[]) =>
    onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: values });
  const int = (name: string, value: number) =>
    onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: value });
  let x = 'input';
  if (!nchw) {
    nodes.push(
      onnx.NodeProto.create({
        name: '/to_nchw/Transpose',
        opType: 'Transpose',
        input: [x],
        output: ['nchw'],
        attribute: [ints('perm', [0, 3, 1, 2])],
      }),
    );
    x = 'nchw';
  }
  nodes.push(
    onnx.NodeProto.create({ name: '/features/Relu', opType: 'Relu', input: [x], output: ['/features/Relu_output_0'] }),
  );
  x = '/features/Relu_output_0';
  if (pool === 'GlobalAveragePool') {
    nodes.push(
      onnx.NodeProto.create({
        name: '/avgpool/GlobalAveragePool',
        opType: 'GlobalAveragePool',
        input: [x],
        output: ['pooled'],
      }),
    );
  } else if (pool === 'ReduceMean13') {
    nodes.push(
      onnx.NodeProto.create({
        name: '/pool/ReduceMean',
        opType: 'ReduceMean',
        input: [x],
        output: ['pooled'],
        attribute: [ints('axes', [2, 3]), int('keepdims', 1)],
      }),
    );
  } else if (pool === 'ReduceMean18') {
    initializers.push(
      onnx.TensorProto.create({
        name: 'axes',
        dataType: onnx.TensorProto.DataType.INT64,
        dims: [2],
        int64Data: [2, 3],
      }),
    );
    nodes.push(
      onnx.NodeProto.create({
        name: '/pool/ReduceMean',
        opType: 'ReduceMean',
        input: [x, 'axes'],
        output: ['pooled'],
        attribute: [int('keepdims', 1)],
      }),
    );
  } else {
    nodes.push(
      onnx.NodeProto.create({ name: '/pool/MaxPool', opType: 'GlobalMaxPool', input: [x], output: ['pooled'] }),
    );
  }
  nodes.push(
    onnx.NodeProto.create({
      name: '/Flatten',
      opType: 'Flatten',
      input: ['pooled'],
      output: ['flat'],
      attribute: [int('axis', 1)],
    }),
  );
  initializers.push(
    onnx.TensorProto.create({
      name: 'fc.weight',
      dataType: onnx.TensorProto.DataType.FLOAT,
      dims: [3, 4],
      floatData: [1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1],
    }),
  );
  nodes.push(
    onnx.NodeProto.create({ name: '/fc/MatMul', opType: 'MatMul', input: ['flat', 'fc.weight'], output: ['logits'] }),
  );
  const tensorType = (dim: object[]) => ({ tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim } } });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: pool === 'ReduceMean18' ? 18 : 13 }],
    graph: {
      name: 'tiny',
      node: nodes,
      initializer: initializers,
      input: [{ name: 'input', type: tensorType(dims) }],
      output: [{ name: 'logits', type: tensorType([batchDim, { dimValue: 4 }]) }],
    },
  });
  return encodeModel(model);
}

export async function writeTinyModel(file: string, options: Parameters<typeof tinyModel>[0] = {}): Promise<string> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await fsp.writeFile(file, tinyModel(options));
  return file;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      cwd: options.cwd ?? repoRoot,
      env: { ...process.env, ...options.env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** `featcache extract` of one split of `data` with the shared MobileNetV2-int8, on the CPU, into `cache`. */
export function extractMobilenet(data: string, split: string, cache: string): Promise<CliResult> {
  return runCli([
    'extract',
    '--data',
    data,
    '--split',
    split,
    '--model',
    mobilenetModel,
    '--cache',
    cache,
    '--device',
    'cpu',
  ]);
}

export function readFloat32(file: string): Float32Array {
  const buffer = fs.readFileSync(file);
  return new Float32Array(buffer.buffer, buffer.byteOffset, buffer.byteLength / 4);
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! ** 2;
    nb += b[i]! ** 2;
  }
  return dot / Math.sqrt(na * nb);
}

function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** A few hundred bytes of PNG whose header declares width × height pixels: a decompression bomb. */
export function pngBomb(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const idat = zlib.deflateSync(Buffer.alloc(1024));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', idat),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** An image of roughly one colour with seeded jitter: classes of different colours are separable by the tiny model. */
export async function writeColourImage(
  file: string,
  rgb: [number, number, number],
  seed: number,
  format: 'jpeg' | 'png' = 'png',
): Promise<void> {
  const width = 40;
  const height = 30;
  const data = Buffer.alloc(width * height * 3);
  let state = seed * 2654435761;
  for (let i = 0; i < data.length; i++) {
    state = (state * 1103515245 + 12345) >>> 0;
    data[i] = Math.max(0, Math.min(255, rgb[i % 3]! + ((state >>> 16) % 61) - 30));
  }
  await fsp.mkdir(path.dirname(file), { recursive: true });
  await sharp(data, { raw: { width, height, channels: 3 } })
    .toFormat(format)
    .toFile(file);
}

/** train/val ImageFolder of colour classes (red, green, blue), `perClass` images each in train, half in val. */
export async function writeColourFolder(root: string, perClass: number): Promise<void> {
  const colours: Record<string, [number, number, number]> = {
    blue: [40, 60, 200],
    green: [50, 190, 60],
    red: [200, 50, 40],
  };
  let seed = 1;
  for (const [split, n] of [
    ['train', perClass],
    ['val', Math.ceil(perClass / 2)],
  ] as const) {
    for (const [name, rgb] of Object.entries(colours)) {
      for (let i = 0; i < n; i++) await writeColourImage(path.join(root, split, name, `${name}${i}.png`), rgb, seed++);
    }
  }
}
