/**
 * How close int8 features are to FP32 ones. Plain cosine flatters (features of different images already have
 * cosine ≥ 0.9 with ReLU backbones), so the centred cosine — each dimension's FP32 mean over the set subtracted
 * from both — is the number that says whether what distinguishes images survived quantisation.
 */
export interface Fidelity {
  count: number;
  cosine: { min: number; median: number };
  centredCosine: { min: number; median: number };
}

function cosine(a: Float32Array | Float64Array, b: Float32Array | Float64Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na === 0 || nb === 0 ? (na === nb ? 1 : 0) : dot / Math.sqrt(na * nb);
}

export function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  return sorted.length === 0 ? Number.NaN : sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Row-wise comparison of `count` × `dim` feature matrices (reference first). */
export function featureFidelity(reference: Float32Array, other: Float32Array, count: number, dim: number): Fidelity {
  const mean = new Float64Array(dim);
  for (let r = 0; r < count; r++) for (let d = 0; d < dim; d++) mean[d]! += reference[r * dim + d]! / count;
  const plain: number[] = [];
  const centred: number[] = [];
  const a = new Float64Array(dim);
  const b = new Float64Array(dim);
  for (let r = 0; r < count; r++) {
    const x = reference.subarray(r * dim, (r + 1) * dim);
    const y = other.subarray(r * dim, (r + 1) * dim);
    plain.push(cosine(x, y));
    for (let d = 0; d < dim; d++) {
      a[d] = x[d]! - mean[d]!;
      b[d] = y[d]! - mean[d]!;
    }
    centred.push(cosine(a, b));
  }
  return {
    count,
    cosine: { min: Math.min(...plain), median: median(plain) },
    centredCosine: { min: Math.min(...centred), median: median(centred) },
  };
}

/** Share of rows whose arg-max class is the same in two `count` × `classes` score matrices. */
export function predictionAgreement(a: Float32Array, b: Float32Array, count: number, classes: number): number {
  const argmax = (m: Float32Array, r: number) => {
    let best = 0;
    for (let c = 1; c < classes; c++) if (m[r * classes + c]! > m[r * classes + best]!) best = c;
    return best;
  };
  let same = 0;
  for (let r = 0; r < count; r++) if (argmax(a, r) === argmax(b, r)) same++;
  return count === 0 ? Number.NaN : same / count;
}
