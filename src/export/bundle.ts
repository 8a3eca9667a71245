/**
 * One ONNX file that classifies images on its own: the tapped backbone, the head's feature normalisation, its dense
 * layers and a (temperature-scaled) softmax, joined by graph surgery on the ONNX protobuf. Everything a runtime needs
 * to feed it (classes, preprocessing, image policy) and where it came from travels in `metadata_props`, so the file
 * is usable from Python's onnxruntime or onnxruntime-web without featcache.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { toFloat16 } from '../backbone/fp16.js';
import { decodeModel, graphInputs, loadModel } from '../backbone/graph.js';
import { type DeviceSpec, type InputLayout, inputLayout } from '../backbone/session.js';
import { FEATURE_OUTPUT, resolveTap, tappedModel } from '../backbone/tap.js';
import { openWorkerSession } from '../backbone/worker-client.js';
import { FeatcacheError, optionName, ExitCode } from '../errors.js';
import { type HeadFiles, type HeadInfo, readHeadFiles } from '../head/saved.js';
import { DEFAULT_IMAGE_POLICY, type ImagePolicy, type Preset } from '../image/presets.js';
import type { Normalization } from '../head/normalize.js';
import { exists, sha256Bytes } from '../util/fsx.js';
import { toolVersions } from '../version.js';
import {
  type AttributeProto,
  DataType,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  encodeModel,
  makeFloatTensor,
  makeIntAttribute,
  makeNode,
  onnx,
  makeValueInfo,
  withGraph,
} from '../onnx/build.js';

/** Graph outputs of a bundle: calibrated probabilities and the (untempered) logits, both float32 [N, classes]. */
export const PROBABILITIES_OUTPUT = 'probabilities';
export const LOGITS_OUTPUT = 'logits';
export const BUNDLE_FORMAT = 1;

/** metadata_props keys; values are JSON except `featcache.format`. */
export const METADATA_KEYS = Object.freeze({
  format: 'featcache.format',
  classes: 'featcache.classes',
  preprocessing: 'featcache.preprocessing',
  provenance: 'featcache.provenance',
});

/** How to turn an image file into the model's input, spelled out for runtimes that never saw featcache. */
export interface BundlePreprocessing {
  preset: Preset;
  /** The input tensor: its name and layout ([N,3,H,W] for NCHW, [N,H,W,3] for NHWC). */
  input: { name: string; layout: 'NCHW' | 'NHWC'; height: number; width: number };
  /** EXIF orientation and ICC profile policy the head was trained with, and the decoder's pixel cap. */
  policy: ImagePolicy;
  /** The recipe in words, one step per entry. */
  steps: string[];
}

export interface BundleProvenance {
  backbone: { file: string; sha256: string; tappedTensor: string; precision: 'fp32' | 'fp16' | 'int8' };
  head: {
    dir: string;
    id: string;
    trainedAt: string;
    normalization: Normalization['kind'];
    temperature: number;
    layers: number[];
  };
  cache: string;
  createdAt: string;
  versions: Record<string, string>;
  headVersions: Record<string, string>;
}

export interface BundleMetadata {
  format: number;
  classes: string[];
  preprocessing: BundlePreprocessing;
  provenance: BundleProvenance;
}

export { type HeadFiles, readHeadFiles } from '../head/saved.js';

/** A node of the head, named after its op and output so that it reads apart from the backbone's nodes. */
function headNode(opType: string, inputs: string[], output: string, attributes: AttributeProto[] = []): NodeProto {
  return makeNode(opType, inputs, output, { name: `featcache_head/${opType}_${output}`, attributes });
}

/** The head's feature normalisation as nodes reading FEATURE_OUTPUT; `output` names the normalised features. */
function normalizationNodes(
  n: Normalization,
  dim: number,
): { nodes: NodeProto[]; inits: TensorProto[]; output: string } {
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  let x = FEATURE_OUTPUT;
  if (n.kind === 'l2') {
    inits.push(
      makeFloatTensor('featcache_head/ones', [dim, 1], new Float32Array(dim).fill(1)),
      makeFloatTensor('featcache_head/tiny', [], [1e-30]),
    );
    nodes.push(
      headNode('Mul', [x, x], 'featcache_head/squares'),
      headNode('MatMul', ['featcache_head/squares', 'featcache_head/ones'], 'featcache_head/sum_squares'),
      headNode('Sqrt', ['featcache_head/sum_squares'], 'featcache_head/norm'),
      // A zero vector stays zero (0 / tiny), as applyNormalization leaves it.
      headNode('Max', ['featcache_head/norm', 'featcache_head/tiny'], 'featcache_head/safe_norm'),
      headNode('Div', [x, 'featcache_head/safe_norm'], 'featcache_head/normalized'),
    );
    x = 'featcache_head/normalized';
  } else if (n.kind === 'standard') {
    if (n.mean?.length !== dim || n.std?.length !== dim)
      throw new FeatcacheError(
        `${optionName('head')}: standard statistics are ${n.mean?.length}-d but the first layer takes ${dim}`,
        ExitCode.failed,
      );
    inits.push(
      makeFloatTensor('featcache_head/mean', [dim], n.mean),
      makeFloatTensor('featcache_head/std', [dim], n.std),
    );
    nodes.push(
      headNode('Sub', [x, 'featcache_head/mean'], 'featcache_head/centred'),
      headNode('Div', ['featcache_head/centred', 'featcache_head/std'], 'featcache_head/normalized'),
    );
    x = 'featcache_head/normalized';
  }
  return { nodes, inits, output: x };
}

/**
 * Appends the head to a tapped graph whose output is FEATURE_OUTPUT [N, C]. Every op used (MatMul, Add, Mul, Sqrt,
 * Max, Sub, Div, Relu, Softmax on the last axis of a 2-D tensor) means the same from opset 8 on, so the backbone's
 * own opset is kept. The sums of l2 normalisation are a MatMul with ones, which avoids ReduceSum's axes moving from
 * attribute to input between opsets.
 */
/** @internal */
export function appendHead(tapped: ModelProto, head: Pick<HeadFiles, 'info' | 'layers'>): ModelProto {
  const graph = tapped.graph!;
  const dim = head.layers[0]!.shape[0];
  const { nodes, inits, output: normalized } = normalizationNodes(head.info.normalization, dim);
  let x = normalized;
  head.layers.forEach((layer, i) => {
    const last = i + 1 === head.layers.length;
    inits.push(
      makeFloatTensor(`featcache_head/dense${i}/kernel`, layer.shape, layer.kernel),
      makeFloatTensor(`featcache_head/dense${i}/bias`, [layer.shape[1]], layer.bias),
    );
    nodes.push(headNode('MatMul', [x, `featcache_head/dense${i}/kernel`], `featcache_head/dense${i}/matmul`));
    const pre = last ? LOGITS_OUTPUT : `featcache_head/dense${i}/preactivation`;
    nodes.push(headNode('Add', [`featcache_head/dense${i}/matmul`, `featcache_head/dense${i}/bias`], pre));
    if (!last) nodes.push(headNode('Relu', [pre], `featcache_head/dense${i}/out`));
    x = last ? pre : `featcache_head/dense${i}/out`;
  });
  const temperature = (head.info as { temperature?: number }).temperature ?? 1;
  if (temperature !== 1) {
    inits.push(makeFloatTensor('featcache_head/temperature', [], [temperature]));
    nodes.push(headNode('Div', [x, 'featcache_head/temperature'], 'featcache_head/tempered'));
    x = 'featcache_head/tempered';
  }
  nodes.push(headNode('Softmax', [x], PROBABILITIES_OUTPUT, [makeIntAttribute('axis', 1)]));
  const classes = head.layers.at(-1)!.shape[1];
  const output = (name: string) => makeValueInfo(name, DataType.FLOAT, ['N', classes]);
  return withGraph(tapped, {
    name: `${graph.name ?? 'backbone'}+featcache_head`,
    node: [...(graph.node ?? []), ...nodes],
    initializer: [...(graph.initializer ?? []), ...inits],
    output: [output(PROBABILITIES_OUTPUT), output(LOGITS_OUTPUT)],
  });
}

function preprocessingSteps(preset: Preset, policy: ImagePolicy, layout: 'NCHW' | 'NHWC'): string[] {
  return [
    `decode the first frame; EXIF orientation: ${policy.exif === 'apply' ? 'rotate upright' : 'ignore (as PIL)'}; ICC profile: ${policy.icc === 'convert' ? 'convert to sRGB' : 'ignore (as PIL)'}; refuse images over ${policy.maxPixels} pixels`,
    'drop alpha, 8-bit RGB',
    `resize so the shorter side is ${preset.resizeShorter} (long side truncated: int(${preset.resizeShorter} * long / short)), ${preset.kernel === 'pil-bilinear' || preset.kernel === 'linear' ? 'bilinear with antialiasing (PIL BILINEAR)' : preset.kernel}`,
    `centre-crop ${preset.crop}×${preset.crop} (offsets round((size - ${preset.crop}) / 2))`,
    `channel order ${preset.channelOrder}; value = (pixel * ${preset.scale} - mean[c]) / std[c] with mean ${JSON.stringify(preset.mean)}, std ${JSON.stringify(preset.std)}`,
    `float32 ${layout === 'NCHW' ? '[N, 3, H, W]' : '[N, H, W, 3]'}; output "${PROBABILITIES_OUTPUT}" [N, classes] is softmax(logits / temperature)`,
  ];
}

export interface BuildBundleOptions {
  head: string;
  /** Backbone file; default: the one recorded in the head (checked by sha256 either way). */
  model?: string | undefined;
}

/** The fused model and its metadata, in memory (serve uses this directly; `bundle` writes it to a file). */
export async function buildBundle(
  options: BuildBundleOptions,
): Promise<{ bytes: Uint8Array; metadata: BundleMetadata }> {
  const head = await readHeadFiles(options.head);
  const p = head.info.provenance;
  const { model, modelFile, sha256 } = await loadHeadBackbone(head, options);
  const inputs = graphInputs(model.graph!);
  if (inputs.length !== 1)
    throw new FeatcacheError(
      `${optionName('model')}: ${modelFile} has ${inputs.length} inputs; expected one image input`,
    );
  const layout = inputLayout(inputs[0]!.name, inputs[0]!.shape);
  const tap = resolveTap(model.graph!, p.tappedTensor);
  const tapped = tappedModel(model, tap);
  const fused = appendHead(p.precision === 'fp16' ? toFloat16(tapped) : tapped, head);
  const metadata = bundleMetadata(head, options.head, { file: modelFile, sha256 }, layout);
  return { bytes: encodeModel(withBundleMetadata(fused, metadata, layout)), metadata };
}

/** The FP32 backbone file the head was trained on features of: found, and proven the same by its sha256. */
async function loadHeadBackbone(
  head: HeadFiles,
  options: BuildBundleOptions,
): Promise<{ model: ModelProto; modelFile: string; sha256: string }> {
  const p = head.info.provenance;
  if (p.precision === 'int8') {
    // The head saw features of the calibrated int8 graph, not of this FP32 file: fusing it onto FP32 would shift them.
    throw new FeatcacheError(
      `${optionName('head')} ${options.head}: trained on int8 features; a bundle fuses the FP32 backbone, so retrain the head on FP32 features to bundle or serve it (predict runs int8 heads)`,
    );
  }
  const modelFile = options.model ?? p.modelFile;
  if (!(await exists(modelFile))) {
    throw new FeatcacheError(
      `${optionName('model')}: ${modelFile} not found; the head ${options.head} was trained on features of that file (sha256 ${p.modelSha256.slice(0, 12)}…), pass its current path with ${optionName('model')}`,
    );
  }
  const { model, bytes } = await loadModel(modelFile);
  const sha256 = sha256Bytes(bytes);
  if (sha256 !== p.modelSha256) {
    throw new FeatcacheError(
      `${optionName('model')}: ${modelFile} has sha256 ${sha256.slice(0, 12)}…, not the backbone the head ${options.head} was trained on (${p.modelSha256.slice(0, 12)}…)`,
    );
  }
  return { model, modelFile, sha256 };
}

/** What a runtime needs to feed the bundle, and where it came from. */
function bundleMetadata(
  head: HeadFiles,
  headDir: string,
  backbone: { file: string; sha256: string },
  layout: InputLayout,
): BundleMetadata {
  const p = head.info.provenance;
  const preset = p.preset as unknown as Preset;
  const policy: ImagePolicy = {
    ...DEFAULT_IMAGE_POLICY,
    exif: p.exif as ImagePolicy['exif'],
    icc: p.icc as ImagePolicy['icc'],
  };
  return {
    format: BUNDLE_FORMAT,
    classes: head.info.classes,
    preprocessing: {
      preset,
      input: {
        name: layout.name,
        layout: layout.layout,
        height: layout.height ?? preset.crop,
        width: layout.width ?? preset.crop,
      },
      policy,
      steps: preprocessingSteps(preset, policy, layout.layout),
    },
    provenance: {
      backbone: {
        file: path.basename(backbone.file),
        sha256: backbone.sha256,
        tappedTensor: p.tappedTensor,
        precision: p.precision ?? 'fp32',
      },
      head: {
        dir: path.basename(path.resolve(headDir)),
        id: head.id,
        trainedAt: p.trainedAt,
        normalization: head.info.normalization.kind,
        temperature: head.info.temperature ?? 1,
        layers: head.layers.map((l) => l.shape[1]),
      },
      cache: p.cache,
      createdAt: new Date().toISOString(),
      versions: toolVersions(),
      headVersions: p.versions,
    },
  };
}

/** `fused` carrying the metadata in metadata_props (replacing featcache's keys, keeping any others) and a docString. */
function withBundleMetadata(fused: ModelProto, metadata: BundleMetadata, layout: InputLayout): ModelProto {
  const props = [
    { key: METADATA_KEYS.format, value: String(BUNDLE_FORMAT) },
    { key: METADATA_KEYS.classes, value: JSON.stringify(metadata.classes) },
    { key: METADATA_KEYS.preprocessing, value: JSON.stringify(metadata.preprocessing) },
    { key: METADATA_KEYS.provenance, value: JSON.stringify(metadata.provenance) },
  ];
  const keys = new Set<string>(props.map((x) => x.key));
  return onnx.ModelProto.create({
    ...fused,
    producerName: 'featcache',
    producerVersion: metadata.provenance.versions.featcache ?? '',
    docString:
      `featcache classifier: ${metadata.classes.length} classes (${metadata.classes.slice(0, 5).join(', ')}${metadata.classes.length > 5 ? ', …' : ''}). ` +
      `Input "${layout.name}" float32 ${layout.layout}; output "${PROBABILITIES_OUTPUT}". Preprocessing and provenance: metadata_props featcache.*.`,
    metadataProps: [...(fused.metadataProps ?? []).filter((m) => !keys.has(m.key ?? '')), ...props],
  });
}

/** The metadata of a featcache bundle, or null when the model carries none (a plain backbone, say). */
/** @internal */
export function bundleMetadataOf(model: ModelProto, source: string): BundleMetadata | null {
  const props = new Map((model.metadataProps ?? []).map((m) => [m.key ?? '', m.value ?? '']));
  if (!props.has(METADATA_KEYS.format)) return null;
  const format = Number(props.get(METADATA_KEYS.format));
  if (format !== BUNDLE_FORMAT)
    throw new FeatcacheError(
      `${optionName('model')}: ${source} is a featcache bundle of format ${format}; this featcache reads format ${BUNDLE_FORMAT}`,
    );
  try {
    return {
      format,
      classes: JSON.parse(props.get(METADATA_KEYS.classes)!) as BundleMetadata['classes'],
      preprocessing: JSON.parse(props.get(METADATA_KEYS.preprocessing)!) as BundleMetadata['preprocessing'],
      provenance: JSON.parse(props.get(METADATA_KEYS.provenance)!) as BundleMetadata['provenance'],
    };
  } catch {
    throw new FeatcacheError(
      `${optionName('model')}: ${source} has featcache metadata that is not valid JSON`,
      ExitCode.failed,
    );
  }
}

/**
 * ModelProto's metadata_props (field 14) without decoding the graph: a top-level walk over the protobuf fields, so
 * telling a bundle from a plain backbone costs a read, not a decode of hundreds of MB of weights.
 */
export function metadataPropsOf(bytes: Uint8Array): Map<string, string> | null {
  const props = new Map<string, string>();
  let at = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      if (at >= bytes.length) throw new Error('truncated');
      const byte = bytes[at++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
    throw new Error('bad varint');
  };
  try {
    while (at < bytes.length) {
      const tag = varint();
      const wire = tag % 8;
      const field = Math.floor(tag / 8);
      if (wire === 0) varint();
      else if (wire === 1) at += 8;
      else if (wire === 5) at += 4;
      else if (wire === 2) {
        const length = varint();
        if (at + length > bytes.length) return null;
        if (field === 14) {
          const entry = onnx.StringStringEntryProto.decode(bytes.subarray(at, at + length));
          props.set(entry.key, entry.value);
        }
        at += length;
      } else return null;
    }
  } catch {
    return null;
  }
  return props;
}

/** True when `file` is an ONNX model carrying featcache bundle metadata (cheap enough for `predict --model`). */
export async function isBundleFile(file: string): Promise<boolean> {
  if (!file.endsWith('.onnx')) return false;
  const bytes = await fs.readFile(file).catch(() => null);
  return bytes !== null && (metadataPropsOf(bytes)?.has(METADATA_KEYS.format) ?? false);
}

/** What a prediction report needs of a head, from a bundle's metadata. */
export function reportInfoOf(bundle: BundleMetadata): HeadInfo {
  const b = bundle.provenance.backbone;
  return {
    classes: bundle.classes,
    provenance: {
      modelFile: b.file,
      modelSha256: b.sha256,
      tappedTensor: b.tappedTensor,
      preset: bundle.preprocessing.preset as unknown as Record<string, unknown>,
    },
  } as HeadInfo;
}

export interface OpenedBundle extends BundleMetadata {
  source: string;
  /** The execution provider running the model ("cpu", "cuda:0"). */
  provider: string;
  layout: InputLayout;
  /** Probabilities [count, classes] for `count` preprocessed images. The pixel buffer is transferred (detached). */
  predict(pixels: Float32Array, count: number): Promise<Float32Array>;
  close(): Promise<void>;
}

export interface OpenBundleOptions {
  device?: DeviceSpec | undefined;
  threads?: number | undefined;
}

/** Opens a bundle file for inference. */
export async function openBundle(file: string, options: OpenBundleOptions = {}): Promise<OpenedBundle> {
  const bytes = await fs.readFile(file).catch((error: NodeJS.ErrnoException) => {
    throw new FeatcacheError(`${optionName('model')}: cannot read ${file} (${error.code})`);
  });
  return openBundleBytes(new Uint8Array(bytes), file, options);
}

/**
 * Opens fused-model bytes in the backbone's onnxruntime worker thread (the same worker extract uses), so inference
 * never blocks the thread that parses requests and drives sharp.
 */
export async function openBundleBytes(
  bytes: Uint8Array,
  source: string,
  options: OpenBundleOptions = {},
): Promise<OpenedBundle> {
  const model = decodeModel(bytes, source);
  const metadata = bundleMetadataOf(model, source);
  if (!metadata)
    throw new FeatcacheError(
      `${optionName('model')}: ${source} is not a featcache bundle (no ${METADATA_KEYS.format} in its metadata_props); make one with 'featcache bundle'`,
    );
  const inputs = graphInputs(model.graph!);
  const layout = inputLayout(inputs[0]!.name, inputs[0]!.shape);
  const size = metadata.preprocessing.input;
  // The worker takes ownership of the buffer it is sent: send our own copy unless `bytes` is a whole buffer.
  const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
  const settings = { device: options.device ?? { kind: 'cpu' as const }, threads: options.threads ?? 0 };
  const session = await openWorkerSession(own, settings, layout, PROBABILITIES_OUTPUT, {
    height: size.height,
    width: size.width,
  });
  return {
    ...metadata,
    source,
    provider: session.provider,
    layout,
    async predict(pixels, count) {
      if (count === 0) return new Float32Array();
      return session.run(pixels, count, size.height);
    },
    close: () => session.close(),
  };
}
