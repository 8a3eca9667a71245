/**
 * The one product exact search needs, dots = A·Bᵀ of two row blocks, on onnxruntime's MLAS sgemm (the head's
 * `MatMul` sessions), written into an output buffer this object owns and reuses. `MatMul.abt` hands back a fresh
 * float64 copy of every product; for kNN that copy and its garbage were a third of the time of a 64-d self-kNN
 * (measured with `node --cpu-prof`, see README "Neighbours"), so the neighbour stage keeps its products in float32,
 * in place.
 */
import { MatMul } from '../head/probe/linalg.js';

export class BlockProduct {
  private readonly matmul = new MatMul();
  private out = new Float32Array(0);

  /** Multiply-adds done, for GFLOP/s. */
  get macs(): number {
    return this.matmul.macs;
  }

  /**
   * dots[i·p + j] = a[i]·b[j] for a [m, k] and b [p, k], row-major. The returned view is overwritten by the next call:
   * read it before asking for another product.
   */
  async abt(a: Float32Array, b: Float32Array, m: number, k: number, p: number): Promise<Float32Array> {
    if (this.out.length < m * p) this.out = new Float32Array(m * p);
    await this.matmul.abtInto(a, b, m, k, p, this.out);
    return this.out.subarray(0, m * p);
  }

  /** Releases the sessions that opened (one that failed to open threw where it was used). */
  async dispose(): Promise<void> {
    await this.matmul.dispose();
    this.out = new Float32Array(0);
  }
}
