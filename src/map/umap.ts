/**
 * UMAP's layout step (McInnes, Healy & Melville 2018) over a kNN graph that is already computed, in typed arrays:
 * the fuzzy simplicial set of umap-learn 0.5 (smooth kNN distances, fuzzy union), then its stochastic gradient descent
 * with negative sampling, step for step as umap-learn's `optimize_layout_euclidean`, so the picture has its
 * properties. umap-js 1.4.0 takes a precomputed graph too, but keeps the sparse graph in a Map keyed by strings and the
 * embedding in nested arrays: 73 s for 20 k points where this takes a few (scripts/bench-map.ts measures both), and
 * memory past 100 k points. Its `findABParams` (the curve fit of umap-learn's `find_ab_params`) is used as is.
 *
 * Everything random comes from one seeded generator consumed in a fixed order, and the arithmetic is sequential, so
 * the same graph, parameters and seed give the same coordinates to the bit.
 */
import { findABParams } from 'umap-js/dist/umap.js';
import { seededRandom } from '../util/random.js';

export interface UmapParameters {
  /** Optimisation epochs; 0 = umap-learn's choice (500 up to 10 000 points, 200 above). */
  epochs: number;
  /** How tightly points may pack (umap-learn's min_dist). */
  minDist: number;
  spread: number;
  /** Negative samples per positive sample. */
  negativeSampleRate: number;
  learningRate: number;
  repulsionStrength: number;
  seed: number;
}

export const DEFAULT_UMAP_PARAMETERS: Readonly<UmapParameters> = Object.freeze({
  epochs: 0,
  minDist: 0.1,
  spread: 1,
  negativeSampleRate: 5,
  learningRate: 1,
  repulsionStrength: 1,
  seed: 0,
});

/** A kNN graph without self-loops: row i's k nearest other points, ascending distance, -1 where absent. */
export interface NeighbourGraph {
  count: number;
  k: number;
  indices: Int32Array;
  distances: Float32Array;
}

/** Symmetric weighted edges, both directions listed (as umap-learn's COO graph). */
export interface FuzzyGraph {
  head: Int32Array;
  tail: Int32Array;
  weight: Float32Array;
}

const SMOOTH_K_TOLERANCE = 1e-5;
const MIN_K_DIST_SCALE = 1e-3;
const BINARY_SEARCH_STEPS = 64;

/** umap-learn's epochs for a data set of `count` points. */
export function defaultEpochs(count: number): number {
  return count <= 10_000 ? 500 : 200;
}

/**
 * The fuzzy simplicial set of the graph: per point, ρ (distance to its nearest other point) and σ such that
 * Σ exp(−(d − ρ)/σ) over its neighbours and itself is log2(k + 1), membership exp(−(d − ρ)/σ); then the fuzzy union
 * w_ij + w_ji − w_ij·w_ji. The graph's rows list no self, so the point itself (umap-learn's column 0, at distance 0)
 * is counted here instead: k + 1 plays umap-learn's n_neighbors.
 */
export function fuzzySimplicialSet(graph: NeighbourGraph): FuzzyGraph {
  const { count: n, k, indices, distances } = graph;
  const target = Math.log2(k + 1);
  let meanAll = 0;
  let finite = 0;
  for (let e = 0; e < n * k; e++)
    if (indices[e]! >= 0) {
      meanAll += distances[e]!;
      finite++;
    }
  // umap-learn averages over every column, the self column's zeros included.
  meanAll = finite > 0 ? meanAll / (finite + n) : 0;
  const rho = new Float64Array(n);
  const sigma = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const row = i * k;
    let valid = 0;
    let sum = 0;
    let firstPositive = 0;
    for (let j = 0; j < k; j++) {
      if (indices[row + j]! < 0) continue;
      const d = distances[row + j]!;
      valid++;
      sum += d;
      if (firstPositive === 0 && d > 0) firstPositive = d;
    }
    rho[i] = firstPositive;
    let lo = 0;
    let hi = Infinity;
    let mid = 1;
    for (let step = 0; step < BINARY_SEARCH_STEPS; step++) {
      let psum = 0;
      for (let j = 0; j < k; j++) {
        if (indices[row + j]! < 0) continue;
        const d = distances[row + j]! - firstPositive;
        psum += d > 0 ? Math.exp(-(d / mid)) : 1;
      }
      if (Math.abs(psum - target) < SMOOTH_K_TOLERANCE) break;
      if (psum > target) {
        hi = mid;
        mid = (lo + hi) / 2;
      } else {
        lo = mid;
        mid = hi === Infinity ? mid * 2 : (lo + hi) / 2;
      }
    }
    const meanRow = valid > 0 ? sum / (valid + 1) : 0;
    sigma[i] = Math.max(mid, MIN_K_DIST_SCALE * (firstPositive > 0 ? meanRow : meanAll));
  }
  const membership = new Float32Array(n * k);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < k; j++) {
      const e = i * k + j;
      const other = indices[e]!;
      if (other < 0 || other === i) continue;
      const d = distances[e]! - rho[i]!;
      membership[e] = d <= 0 || sigma[i] === 0 ? 1 : Math.exp(-(d / sigma[i]!));
    }
  const weightOf = (from: number, to: number): number => {
    for (let j = 0; j < k; j++) if (indices[from * k + j] === to) return membership[from * k + j]!;
    return -1;
  };
  const head: number[] = [];
  const tail: number[] = [];
  const weight: number[] = [];
  for (let i = 0; i < n; i++)
    for (let j = 0; j < k; j++) {
      const e = i * k + j;
      const other = indices[e]!;
      const w = membership[e]!;
      if (other < 0 || other === i) continue;
      const back = weightOf(other, i);
      const union = back < 0 ? w : w + back - w * back;
      if (union <= 0) continue;
      head.push(i);
      tail.push(other);
      weight.push(union);
      // An edge only one side lists is emitted here for the other side too; a mutual one is emitted by each side.
      if (back < 0) {
        head.push(other);
        tail.push(i);
        weight.push(union);
      }
    }
  return { head: Int32Array.from(head), tail: Int32Array.from(tail), weight: Float32Array.from(weight) };
}

function clip(value: number): number {
  return value > 4 ? 4 : value < -4 ? -4 : value;
}

/**
 * A 2-D UMAP embedding of the graph's points: random initialisation in [−10, 10]², then umap-learn's SGD. Returns
 * x and y per point.
 */
export function umapLayout(
  graph: NeighbourGraph,
  parameters: Partial<UmapParameters> = {},
  onEpoch?: (epoch: number, epochs: number) => void,
): { x: Float32Array; y: Float32Array; epochs: number } {
  const p = { ...DEFAULT_UMAP_PARAMETERS, ...parameters };
  const n = graph.count;
  const epochs = p.epochs > 0 ? p.epochs : defaultEpochs(n);
  const random = seededRandom(p.seed);
  const embedding = new Float64Array(n * 2);
  for (let e = 0; e < n * 2; e++) embedding[e] = random() * 20 - 10;
  const fuzzy = fuzzySimplicialSet(graph);
  let maxWeight = 0;
  for (const w of fuzzy.weight) maxWeight = Math.max(maxWeight, w);
  // umap-learn drops edges too weak to be sampled once in the run.
  const keep: number[] = [];
  fuzzy.weight.forEach((w, e) => {
    if (w >= maxWeight / epochs) keep.push(e);
  });
  const m = keep.length;
  const head = Int32Array.from(keep, (e) => fuzzy.head[e]!);
  const tail = Int32Array.from(keep, (e) => fuzzy.tail[e]!);
  const epochsPerSample = Float64Array.from(keep, (e) => maxWeight / fuzzy.weight[e]!);
  const epochsPerNegative = epochsPerSample.map((v) => v / p.negativeSampleRate);
  const nextSample = Float64Array.from(epochsPerSample);
  const nextNegative = Float64Array.from(epochsPerNegative);
  const { a, b } = findABParams(p.spread, p.minDist);
  const gamma = p.repulsionStrength;
  let alpha = p.learningRate;
  for (let epoch = 0; epoch < epochs; epoch++) {
    for (let i = 0; i < m; i++) {
      if (nextSample[i]! > epoch) continue;
      const j = head[i]! * 2;
      const k = tail[i]! * 2;
      let dx = embedding[j]! - embedding[k]!;
      let dy = embedding[j + 1]! - embedding[k + 1]!;
      let d2 = dx * dx + dy * dy;
      if (d2 > 0) {
        // d^(2b−2) as d^(2b) / d², and a power as exp(b·ln d²): V8's Math.pow is the slowest step of the loop.
        const power = Math.exp(b * Math.log(d2));
        const coefficient = (-2 * a * b * (power / d2)) / (a * power + 1);
        const gx = clip(coefficient * dx) * alpha;
        const gy = clip(coefficient * dy) * alpha;
        embedding[j] = embedding[j]! + gx;
        embedding[j + 1] = embedding[j + 1]! + gy;
        embedding[k] = embedding[k]! - gx;
        embedding[k + 1] = embedding[k + 1]! - gy;
      }
      nextSample[i] = nextSample[i]! + epochsPerSample[i]!;
      const negatives = Math.floor((epoch - nextNegative[i]!) / epochsPerNegative[i]!);
      for (let s = 0; s < negatives; s++) {
        const o = Math.floor(random() * n) * 2;
        dx = embedding[j]! - embedding[o]!;
        dy = embedding[j + 1]! - embedding[o + 1]!;
        d2 = dx * dx + dy * dy;
        if (d2 <= 0) continue;
        const coefficient = (2 * gamma * b) / ((0.001 + d2) * (a * Math.exp(b * Math.log(d2)) + 1));
        embedding[j] = embedding[j]! + clip(coefficient * dx) * alpha;
        embedding[j + 1] = embedding[j + 1]! + clip(coefficient * dy) * alpha;
      }
      nextNegative[i] = nextNegative[i]! + negatives * epochsPerNegative[i]!;
    }
    alpha = p.learningRate * (1 - epoch / epochs);
    onEpoch?.(epoch + 1, epochs);
  }
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = embedding[2 * i]!;
    y[i] = embedding[2 * i + 1]!;
  }
  return { x, y, epochs };
}
