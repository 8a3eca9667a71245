/** The inspect job: a model's inputs, outputs and the tap points a user can choose, with their shapes. */
import * as ort from '../onnx/ort.js';
import { type TensorInfo, encodeModel, graphInputs, graphOutputs, loadModel, onnx } from '../backbone/graph.js';
import { type DeviceSpec, inputLayout, openSession, parseDevice } from '../backbone/session.js';
import { modulePathOfNode, poolCandidates, resolveTap } from '../backbone/tap.js';
import { sha256Bytes } from '../util/fsx.js';
import { withDefaults } from '../util/options.js';
import { DEFAULT_INSPECT_OPTIONS } from './defaults.js';

export { DEFAULT_INSPECT_OPTIONS };

export interface TapCandidate {
  kind: 'pool' | 'module';
  name: string;
  opType: string;
  tensor: string;
  shape: number[] | null;
  default: boolean;
}

export interface InspectResult {
  file: string;
  sha256: string;
  opsets: string[];
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  nodes: number;
  defaultTap: { node: string | null; tensor: string; opType: string } | null;
  candidates: TapCandidate[];
}

/** Shapes of candidate tensors, found by running the graph once on a blank image with them as extra outputs. */
async function probeShapes(
  model: ReturnType<typeof onnx.ModelProto.decode>,
  tensors: string[],
  device: DeviceSpec,
): Promise<Map<string, number[]>> {
  const shapes = new Map<string, number[]>();
  const input = graphInputs(model.graph!)[0];
  if (!input) return shapes;
  let layout;
  try {
    layout = inputLayout(input.name, input.shape);
  } catch {
    return shapes;
  }
  const probe = onnx.ModelProto.create({
    ...model,
    graph: onnx.GraphProto.create({
      ...model.graph,
      output: tensors.map((name) => onnx.ValueInfoProto.create({ name })),
    }),
  });
  const { session } = await openSession(encodeModel(probe), { device, threads: 0 });
  const h = layout.height ?? 224;
  const w = layout.width ?? 224;
  const dims = layout.layout === 'NCHW' ? [1, 3, h, w] : [1, h, w, 3];
  const result = await session.run({ [input.name]: new ort.Tensor('float32', new Float32Array(3 * h * w), dims) });
  for (const name of tensors) if (result[name]) shapes.set(name, result[name].dims.map(Number));
  await session.release();
  return shapes;
}

export interface InspectOptions {
  /** Device the shape probe runs on: `auto` (CUDA, then CPU), `cpu`, `cuda[:N]`. */
  device: string;
}

/**
 * What a model offers: inputs, outputs, and the tap points a user can choose, with their shapes (found by running
 * the graph once on a blank image).
 *
 * @example
 * const r = await inspect('models/resnet50.onnx');
 * console.log(r.defaultTap?.tensor, r.candidates.map((c) => `${c.name} ${JSON.stringify(c.shape)}`));
 */
export async function inspect(file: string, options: Partial<InspectOptions> = {}): Promise<InspectResult> {
  const o = withDefaults(DEFAULT_INSPECT_OPTIONS, options);
  const device = parseDevice(o.device);
  const { model, bytes } = await loadModel(file);
  const graph = model.graph!;
  let defaultTap: InspectResult['defaultTap'] = null;
  try {
    const tap = resolveTap(graph, 'auto');
    defaultTap = { node: tap.node, tensor: tap.tensor, opType: tap.opType };
  } catch {
    defaultTap = null;
  }
  const pools: TapCandidate[] = poolCandidates(graph).map((c) => ({
    kind: 'pool',
    name: c.node,
    opType: c.opType,
    tensor: c.tensor,
    shape: null,
    default: c.tensor === defaultTap?.tensor,
  }));
  // The last node of each top-level PyTorch module: the usual alternatives to the pool (layer3, layer4, ...).
  const lastOfModule = new Map<string, { name: string; opType: string; tensor: string }>();
  for (const node of graph.node ?? []) {
    const top = modulePathOfNode(node.name ?? '')?.split('.')[0];
    if (top)
      lastOfModule.set(top, { name: node.name ?? '', opType: node.opType ?? '', tensor: node.output?.[0] ?? '' });
  }
  const modules: TapCandidate[] = [...lastOfModule.entries()]
    .filter(([, n]) => !pools.some((p) => p.tensor === n.tensor))
    .map(([module, n]) => ({
      kind: 'module',
      name: module,
      opType: n.opType,
      tensor: n.tensor,
      shape: null,
      default: false,
    }));
  const candidates = [...pools, ...modules];
  const shapes = await probeShapes(
    model,
    candidates.map((c) => c.tensor),
    device,
  ).catch(() => new Map<string, number[]>());
  for (const c of candidates) c.shape = shapes.get(c.tensor) ?? null;
  return {
    file,
    sha256: sha256Bytes(bytes),
    opsets: (model.opsetImport ?? []).map((o) => `${o.domain || 'ai.onnx'}:${String(o.version)}`),
    inputs: graphInputs(graph),
    outputs: graphOutputs(graph),
    nodes: graph.node?.length ?? 0,
    defaultTap,
    candidates,
  };
}
