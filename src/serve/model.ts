/**
 * The model `serve` runs: a bundle (built in memory from a head, or read from a file) opened in the onnxruntime
 * worker. With `features`, one extra graph output joins each image's probabilities and its backbone features (the
 * tensor the head was fused onto) in one row, so /similar embeds an image with the very session and batch that
 * classify it: no second copy of the backbone in memory, and the features extract computes for that model and tap.
 */
import { type ModelProto, decodeModel, encodeModel, graphInputs, onnx } from '../backbone/graph.js';
import { type DeviceSpec, type InputLayout, inputLayout } from '../backbone/session.js';
import { FEATURE_OUTPUT } from '../backbone/feature-output.js';
import { openWorkerSession } from '../backbone/worker-client.js';
import { FeatcacheError, ExitCode, optionName } from '../errors.js';
import { type BundleMetadata, METADATA_KEYS, PROBABILITIES_OUTPUT, bundleMetadataOf } from '../export/bundle.js';

/** The output that carries [probabilities | features] per image when features are asked for. */
export const SERVED_OUTPUT = 'featcache_serve_outputs';

export interface ServedModel extends BundleMetadata {
  source: string;
  /** The execution provider running the model ("cpu", "cuda:0"). */
  provider: string;
  layout: InputLayout;
  /** Width of the backbone features that follow the probabilities in each row; 0 when not asked for. */
  featureDim: number;
  /**
   * One row per image of `count` preprocessed images: the class probabilities, then `featureDim` features.
   * The pixel buffer is transferred (detached).
   */
  infer(pixels: Float32Array, count: number): Promise<Float32Array>;
  close(): Promise<void>;
}

export interface ServedModelOptions {
  device: DeviceSpec;
  threads: number;
  /** Also output the backbone features (for /similar). */
  features: boolean;
}

/** Adds SERVED_OUTPUT = Concat(probabilities, features) along the class axis; the bundle's outputs stay. */
function withFeatureOutput(model: ModelProto, source: string): Uint8Array {
  const graph = model.graph!;
  if (!(graph.node ?? []).some((n) => (n.output ?? []).includes(FEATURE_OUTPUT)))
    throw new FeatcacheError(
      `${source}: the bundle has no ${FEATURE_OUTPUT} tensor to embed images with; rebuild it with featcache bundle, or serve the head directory`,
      ExitCode.failed,
    );
  const concat = onnx.NodeProto.create({
    name: `featcache_serve/Concat_${SERVED_OUTPUT}`,
    opType: 'Concat',
    input: [PROBABILITIES_OUTPUT, FEATURE_OUTPUT],
    output: [SERVED_OUTPUT],
    attribute: [onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 1 })],
  });
  const output = onnx.ValueInfoProto.create({
    name: SERVED_OUTPUT,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: [{ dimParam: 'N' }, { dimParam: 'classes_plus_features' }] },
      },
    },
  });
  const extended = onnx.ModelProto.create({
    ...model,
    graph: onnx.GraphProto.create({
      ...graph,
      node: [...(graph.node ?? []), concat],
      output: [...(graph.output ?? []), output],
    }),
  });
  return encodeModel(extended);
}

/** Opens bundle bytes in their own onnxruntime worker thread, so inference never blocks the thread that answers. */
export async function openServedModel(
  bytes: Uint8Array,
  source: string,
  options: ServedModelOptions,
): Promise<ServedModel> {
  const model = decodeModel(bytes, source);
  const metadata = bundleMetadataOf(model, source);
  if (!metadata)
    throw new FeatcacheError(
      `${optionName('bundle')}: ${source} is not a featcache bundle (no ${METADATA_KEYS.format} in its metadata_props); make one with 'featcache bundle'`,
    );
  const graphBytes = options.features ? withFeatureOutput(model, source) : bytes;
  const inputs = graphInputs(model.graph!);
  const layout = inputLayout(inputs[0]!.name, inputs[0]!.shape);
  const size = metadata.preprocessing.input;
  // The worker takes ownership of the buffer it is sent: send our own copy unless the bytes are a whole buffer.
  const own =
    graphBytes.byteOffset === 0 && graphBytes.byteLength === graphBytes.buffer.byteLength
      ? graphBytes
      : graphBytes.slice();
  const session = await openWorkerSession(
    own,
    { device: options.device, threads: options.threads },
    layout,
    options.features ? SERVED_OUTPUT : PROBABILITIES_OUTPUT,
    { height: size.height, width: size.width },
  );
  const featureDim = session.dim - metadata.classes.length;
  if (featureDim < 0 || (options.features && featureDim === 0)) {
    await session.close();
    throw new FeatcacheError(
      `${source}: outputs ${session.dim} values per image for ${metadata.classes.length} classes`,
      ExitCode.failed,
    );
  }
  return {
    ...metadata,
    source,
    provider: session.provider,
    layout,
    featureDim,
    async infer(pixels, count) {
      if (count === 0) return new Float32Array();
      return session.run(pixels, count, size.height);
    },
    close: () => session.close(),
  };
}
