/**
 * Which kernels train a mini-batch head and run its sweep: TF.js, or onnxruntime graphs (ort-engine.ts). Chosen in
 * one place, so the sweep and the refit never disagree.
 */
import type { HeadOptions } from '../model.js';

export const SWEEP_ENGINES = ['auto', 'tfjs', 'onnxruntime'] as const;
export type SweepEngine = (typeof SWEEP_ENGINES)[number];
export type Engine = Exclude<SweepEngine, 'auto'>;

/**
 * auto: tfjs on tfjs-node (its native kernels are as fast), else onnxruntime (MLAS on all cores, several times
 * faster than wasm). The onnxruntime engine trains linear heads only: a hidden layer trains on tfjs.
 */
export function chooseEngine(choice: SweepEngine, backend: string, options: Pick<HeadOptions, 'hidden'>): Engine {
  if (options.hidden > 0) return 'tfjs';
  if (choice === 'auto') return backend === 'tensorflow' ? 'tfjs' : 'onnxruntime';
  return choice;
}

/** Whether `fitHeadOrt` should train this head by default: no tfjs-node and no hidden layer. */
export function shouldUseOrtHead(backend: string, options: Pick<HeadOptions, 'hidden'>): boolean {
  return chooseEngine('auto', backend, options) === 'onnxruntime';
}
