/**
 * The one product exact search needs, dots = A·Bᵀ of two row blocks, on onnxruntime's MLAS sgemm, written into an
 * output buffer this object owns and reuses. The head's general `MatMul` hands back a fresh float64 copy of every
 * product; for kNN that copy and its garbage were a third of the time of a 64-d self-kNN (measured with
 * `node --cpu-prof`, see README "Neighbours"), so the neighbour stage keeps its products in float32, in place.
 */
import * as os from 'node:os';
import * as ort from 'onnxruntime-node';
import { DataType, encodeModel, makeIntAttribute, makeModel, makeNode, makeValueInfo } from '../onnx/build.js';

/** Products with fewer multiply-adds than this run on one thread: a thread pool's hand-off costs more than it saves. */
const PARALLEL_MIN_MACS = 1_000_000;

function gemmAbt(): Uint8Array {
  const matrix = (name: string) => makeValueInfo(name, DataType.FLOAT, [`${name}0`, `${name}1`]);
  return encodeModel(
    makeModel({
      name: 'featcache-knn-block',
      nodes: [makeNode('Gemm', ['a', 'b'], 'c', { name: 'gemm', attributes: [makeIntAttribute('transB', 1)] })],
      inputs: [matrix('a'), matrix('b')],
      outputs: [matrix('c')],
    }),
  );
}

export class BlockProduct {
  private sessions = new Map<number, Promise<ort.InferenceSession>>();
  private out = new Float32Array(0);
  /** Multiply-adds done, for GFLOP/s. */
  macs = 0;

  constructor(private readonly threads = os.availableParallelism()) {}

  private session(threads: number): Promise<ort.InferenceSession> {
    let s = this.sessions.get(threads);
    if (!s) {
      // Spinning off: on a shared machine spinning workers steal the cores the others need.
      s = ort.InferenceSession.create(gemmAbt(), {
        graphOptimizationLevel: 'all',
        intraOpNumThreads: threads,
        executionMode: 'sequential',
        logSeverityLevel: 3,
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
      this.sessions.set(threads, s);
    }
    return s;
  }

  /**
   * dots[i·p + j] = a[i]·b[j] for a [m, k] and b [p, k], row-major. The returned view is overwritten by the next call:
   * read it before asking for another product.
   */
  async abt(a: Float32Array, b: Float32Array, m: number, k: number, p: number): Promise<Float32Array> {
    const macs = m * k * p;
    this.macs += macs;
    if (this.out.length < m * p) this.out = new Float32Array(m * p);
    const c = this.out.subarray(0, m * p);
    const session = await this.session(macs < PARALLEL_MIN_MACS ? 1 : this.threads);
    await session.run(
      {
        a: new ort.Tensor('float32', a.subarray(0, m * k), [m, k]),
        b: new ort.Tensor('float32', b.subarray(0, p * k), [p, k]),
      },
      { c: new ort.Tensor('float32', c, [m, p]) },
    );
    return c;
  }

  /** Releases the sessions that opened (one that failed to open threw where it was used). */
  async dispose(): Promise<void> {
    const opened = await Promise.allSettled(this.sessions.values());
    this.sessions.clear();
    this.out = new Float32Array(0);
    for (const s of opened) if (s.status === 'fulfilled') await s.value.release();
  }
}
