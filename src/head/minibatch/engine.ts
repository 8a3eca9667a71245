/**
 * Which kernels train a mini-batch head and run its sweep: TF.js, or onnxruntime graphs (ort-engine.ts). Chosen in
 * one place, so the sweep and the refit never disagree.
 */
import type { HeadOptions } from '../model.js';

/**
 * The sweep trains each candidate for at least this many optimiser steps, whatever `epochs` says: an epoch of a
 * 30-image training set is one mini-batch, so 100 epochs are only 100 Adam steps. Adam moves each weight by about
 * `lr` per step, and on l2-normalised features (|x_j| ≈ 1/√dim) confident logits need weights of several units:
 * at the grid's top rate (0.03) that takes a few hundred steps, which is what converges, not passes over the data.
 * Measured on 3-shot monkeys (30 rows, 3 folds of 20; scikit-learn's best C: 0.919 val top-1): 100 steps 0.901,
 * 300 → 0.912. More is not better: at 500 and 1000 the l2 candidates' held-out NLL after calibration worsens on
 * the 10-row folds and selection switches to `standard` (0.868). A set with more than 64 rows per fold already
 * takes 300 steps in 100 epochs, so only tiny sets change.
 */
export const MIN_SWEEP_STEPS = 300;

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
