/**
 * Did onnxruntime actually fuse the QDQ graph? A QDQ model that does not fuse runs DequantizeLinear → float Conv →
 * QuantizeLinear, slower than FP32, so int8 is only used when the optimised graph has one QLinearConv per Conv and
 * one QLinearAdd per Add, on a CPU with 8-bit dot products (VNNI); otherwise callers fall back to FP32 and say why.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from '../onnx/ort.js';
import { type GraphProto, decodeModel } from './graph.js';

export interface FusionReport {
  qlinearConv: number;
  qlinearAdd: number;
  /** Conv and Add nodes of the QDQ model, i.e. how many of each should have fused. */
  convs: number;
  adds: number;
  /** Conv nodes onnxruntime left in float (each is a dequantise → float conv → quantise detour). */
  floatConvs: number;
  /** Whether the CPU has 8-bit dot-product instructions (x86 VNNI, Arm dotprod); null when unknown. */
  vnni: boolean | null;
  fused: boolean;
  reason?: string;
}

/** x86 VNNI or Arm dot-product support, read from /proc/cpuinfo; null where that file does not exist. */
export async function cpuHasInt8Dot(cpuinfo?: string): Promise<boolean | null> {
  const text = cpuinfo ?? (await fs.readFile('/proc/cpuinfo', 'utf8').catch(() => null));
  if (text === null) return process.platform === 'darwin' && process.arch === 'arm64' ? true : null;
  return /\b(avx512_vnni|avx_vnni|avx_vnni_int8|asimddp)\b/.test(text);
}

/** @internal */
export function countOps(graph: GraphProto): Map<string, number> {
  const counts = new Map<string, number>();
  for (const n of graph.node ?? []) counts.set(n.opType ?? '', (counts.get(n.opType ?? '') ?? 0) + 1);
  return counts;
}

/** Judges fusion from op counts: pure, so the rules are testable without onnxruntime. */
/** @internal */
export function judgeFusion(qdq: GraphProto, optimised: GraphProto, vnni: boolean | null): FusionReport {
  const before = countOps(qdq);
  const after = countOps(optimised);
  const report: FusionReport = {
    qlinearConv: after.get('QLinearConv') ?? 0,
    qlinearAdd: after.get('QLinearAdd') ?? 0,
    convs: before.get('Conv') ?? 0,
    adds: before.get('Add') ?? 0,
    floatConvs: (after.get('Conv') ?? 0) + (after.get('FusedConv') ?? 0),
    vnni,
    fused: false,
  };
  const problems: string[] = [];
  if (report.convs === 0) problems.push('the model has no Conv to run in int8');
  if (report.qlinearConv < report.convs)
    problems.push(`only ${report.qlinearConv} of ${report.convs} Conv fused to QLinearConv`);
  if (report.qlinearAdd < report.adds)
    problems.push(`only ${report.qlinearAdd} of ${report.adds} Add fused to QLinearAdd`);
  if (vnni === false)
    problems.push('this CPU has no 8-bit dot-product instructions (avx512_vnni/avx_vnni), so int8 would not be faster');
  if (problems.length > 0) report.reason = problems.join('; ');
  report.fused = problems.length === 0;
  return report;
}

/** Opens the model with onnxruntime's full optimiser, has it save the optimised graph, and judges that graph. */
export async function verifyFusion(qdqModel: Uint8Array, options: { cpuinfo?: string } = {}): Promise<FusionReport> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-int8-'));
  const optimisedFile = path.join(dir, 'optimised.onnx');
  try {
    const session = await ort.InferenceSession.create(qdqModel, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: 1,
      optimizedModelFilePath: optimisedFile,
      // onnxruntime warns that an 'all'-level graph is hardware specific; it is only counted, never shipped.
      logSeverityLevel: 3,
    });
    await session.release();
    const optimised = decodeModel(await fs.readFile(optimisedFile), optimisedFile);
    return judgeFusion(
      decodeModel(qdqModel, 'int8 model').graph as GraphProto,
      optimised.graph as GraphProto,
      await cpuHasInt8Dot(options.cpuinfo),
    );
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
