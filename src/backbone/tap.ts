/**
 * The tap: make the pooled tensor a graph output, flattened to [N, C], and drop what only fed the classifier.
 * This is what a PyTorch forward hook on `model.avgpool` observes, computed by the same graph.
 */
import { FeatcacheError } from '../errors.js';
import {
  type GraphProto,
  type ModelProto,
  type NodeProto,
  distanceToOutput,
  encodeModel,
  graphInputs,
  initializerInts,
  intsAttribute,
} from './graph.js';
import { DataType, type AttributeProto, makeIntAttribute, makeNode, makeValueInfo, withGraph } from '../onnx/build.js';
import { DEFAULT_TAP, FEATURE_OUTPUT } from './feature-output.js';

export { FEATURE_OUTPUT } from './feature-output.js';
/** `--tap avgpool` means "the global average pool that feeds the classifier", whatever op implements it. */
export { DEFAULT_TAP };

export type PoolKind = 'GlobalAveragePool' | 'ReduceMean' | 'QLinearGlobalAveragePool';

export interface TapPoint {
  /** Tensor whose value becomes the feature. */
  tensor: string;
  /** Node that produces it, if any. */
  node: string | null;
  opType: string;
  /** How it was found, for the provenance record. */
  matchedBy: 'auto-pool' | 'node' | 'tensor' | 'module';
  /** Quantised pools are dequantised with these (scale, zero point) tensors. */
  dequantize: { scale: string; zeroPoint: string } | null;
}

export interface PoolCandidate {
  node: string;
  opType: PoolKind;
  tensor: string;
  distanceToOutput: number;
}

function isSpatialMean(graph: GraphProto, node: NodeProto): boolean {
  const axes = intsAttribute(node, 'axes') ?? (node.input?.[1] ? initializerInts(graph, node.input[1]) : null);
  if (!axes) return false;
  const sorted = [...axes].sort((a, b) => a - b).join(',');
  // NCHW pools over 2,3; NHWC (Keras/TF exports) over 1,2; negative axes count from the end of a rank-4 tensor.
  return ['2,3', '-2,-1', '1,2', '-3,-2'].includes(sorted);
}

function poolKind(graph: GraphProto, node: NodeProto): PoolKind | null {
  if (node.opType === 'GlobalAveragePool') return 'GlobalAveragePool';
  if (node.opType === 'QLinearGlobalAveragePool') return 'QLinearGlobalAveragePool';
  if (node.opType === 'ReduceMean' && isSpatialMean(graph, node)) return 'ReduceMean';
  return null;
}

/** Every global-average-pool-like node, nearest to the graph output first. */
/** @internal */
export function poolCandidates(graph: GraphProto): PoolCandidate[] {
  const candidates: PoolCandidate[] = [];
  for (const node of graph.node ?? []) {
    const kind = poolKind(graph, node);
    const tensor = node.output?.[0];
    if (kind && tensor) {
      candidates.push({
        node: node.name ?? '',
        opType: kind,
        tensor,
        distanceToOutput: distanceToOutput(graph, tensor),
      });
    }
  }
  return candidates.sort((a, b) => a.distanceToOutput - b.distanceToOutput);
}

function tapFromNode(node: NodeProto, matchedBy: TapPoint['matchedBy']): TapPoint {
  const isQuantisedPool = node.opType === 'QLinearGlobalAveragePool';
  return {
    tensor: node.output?.[0] ?? '',
    node: node.name ?? null,
    opType: node.opType ?? '',
    matchedBy,
    // com.microsoft QLinearGlobalAveragePool inputs: X, x_scale, x_zero_point, y_scale, y_zero_point.
    dequantize: isQuantisedPool ? { scale: node.input?.[3] ?? '', zeroPoint: node.input?.[4] ?? '' } : null,
  };
}

/**
 * The PyTorch module path a torch.onnx node name encodes: `/layer4/layer4.2/relu_2/Relu` -> `layer4.2.relu_2`.
 * Scope components either repeat the parent's dotted path (`layer4.2`) or are bare attribute names (`relu_2`).
 */
export function modulePathOfNode(nodeName: string): string | null {
  if (!nodeName.startsWith('/')) return null;
  const components = nodeName.split('/').slice(1, -1);
  let path = '';
  for (const component of components) {
    path = path && !component.startsWith(`${path}.`) ? `${path}.${component}` : component;
  }
  return path || null;
}

/** A module called several times gets `_1`, `_2`… suffixes on its later calls; the last call is its output. */
function matchesModule(nodeName: string, modulePath: string): boolean {
  const path = modulePathOfNode(nodeName);
  if (!path) return false;
  const withoutCallSuffix = path.replace(/_\d+$/, '');
  return [path, withoutCallSuffix].some((p) => p === modulePath || p.startsWith(`${modulePath}.`));
}

/**
 * Resolves `--tap`: the default pool finder, or a node name, a tensor name, or a PyTorch module path.
 * A spec that matches nothing gets an error that lists what would have matched.
 */
/** @internal */
export function resolveTap(graph: GraphProto, spec: string = DEFAULT_TAP): TapPoint {
  const nodes = graph.node ?? [];
  const byName = nodes.find((n) => n.name === spec);
  if (byName) return tapFromNode(byName, 'node');
  const producer = nodes.find((n) => (n.output ?? []).includes(spec));
  if (producer) {
    const tap = tapFromNode(producer, 'tensor');
    return { ...tap, tensor: spec };
  }
  if (spec === DEFAULT_TAP || spec === 'auto') {
    const best = poolCandidates(graph).find((c) => Number.isFinite(c.distanceToOutput));
    if (best) {
      const node = nodes.find((n) => n.name === best.node && n.output?.[0] === best.tensor);
      if (node) return tapFromNode(node, 'auto-pool');
    }
    if (spec === 'auto') throw noTapError(graph, spec);
  }
  const lastInModule = nodes.filter((n) => matchesModule(n.name ?? '', spec)).at(-1);
  if (lastInModule) return tapFromNode(lastInModule, 'module');
  throw noTapError(graph, spec);
}

function noTapError(graph: GraphProto, spec: string): FeatcacheError {
  const pools = poolCandidates(graph).map((c) => `${c.node} (${c.opType})`);
  const topModules = [
    ...new Set((graph.node ?? []).map((n) => (n.name ?? '').split('/')[1]).filter((m): m is string => Boolean(m))),
  ]
    .filter((m) => !m.includes('_') || m.length < 20)
    .slice(0, 12);
  const hint =
    pools.length > 0
      ? `global average pools: ${pools.join(', ')}`
      : `this model has no global average pool; module scopes: ${topModules.join(', ') || '(none)'}`;
  return new FeatcacheError(
    `--tap ${spec}: no node, tensor or module of that name; ${hint}. Pass one of them, or any node or tensor name listed by 'featcache inspect'`,
  );
}

/** Names of the nodes needed to compute `outputs`, in their original (topological) order. */
function requiredNodes(graph: GraphProto, outputs: string[]): NodeProto[] {
  const producers = new Map<string, NodeProto>();
  for (const node of graph.node ?? []) for (const out of node.output ?? []) producers.set(out, node);
  const needed = new Set<NodeProto>();
  const stack = [...outputs];
  while (stack.length > 0) {
    const tensor = stack.pop() as string;
    const node = producers.get(tensor);
    if (!node || needed.has(node)) continue;
    needed.add(node);
    stack.push(...(node.input ?? []).filter(Boolean));
  }
  return (graph.node ?? []).filter((n) => needed.has(n));
}

function tapNode(opType: string, inputs: string[], output: string, attributes: AttributeProto[] = []): NodeProto {
  return makeNode(opType, inputs, output, { name: `featcache/${opType}`, attributes });
}

/**
 * Returns a new model whose only output is `FEATURE_OUTPUT`, float32 [N, C]: the tapped tensor,
 * dequantised if it is quantised, flattened from axis 1. The classifier and anything else not needed is dropped.
 */
/** @internal */
export function tapModel(model: ModelProto, tap: TapPoint): Uint8Array {
  return encodeModel(tappedModel(model, tap));
}

/** @internal */
export function tappedModel(model: ModelProto, tap: TapPoint): ModelProto {
  const graph = model.graph as GraphProto;
  const extra: NodeProto[] = [];
  let current = tap.tensor;
  if (tap.dequantize) {
    extra.push(
      tapNode('DequantizeLinear', [current, tap.dequantize.scale, tap.dequantize.zeroPoint], 'featcache_dequantized'),
    );
    current = 'featcache_dequantized';
  }
  extra.push(tapNode('Flatten', [current], FEATURE_OUTPUT, [makeIntAttribute('axis', 1)]));
  const kept = requiredNodes({ ...graph, node: [...(graph.node ?? []), ...extra] }, [FEATURE_OUTPUT]);
  const usedTensors = new Set(kept.flatMap((n) => n.input ?? []));
  const realInputs = new Set(graphInputs(graph).map((i) => i.name));
  return withGraph(model, {
    node: kept,
    initializer: (graph.initializer ?? []).filter((t) => usedTensors.has(t.name ?? '')),
    input: (graph.input ?? []).filter((i) => usedTensors.has(i.name ?? '') || realInputs.has(i.name ?? '')),
    valueInfo: (graph.valueInfo ?? []).filter((v) => usedTensors.has(v.name ?? '')),
    output: [makeValueInfo(FEATURE_OUTPUT, DataType.FLOAT, ['N', 'C'])],
  });
}
