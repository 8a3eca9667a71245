/** The sweep's defaults, apart from the sweep so that --help and the library entry read them without onnxruntime. */
import { NORMALIZATIONS } from './normalize.js';
import type { SweepGrid } from './select.js';

/**
 * The probe: scikit-learn's usual C decades and one more on the weak side (l2-normalised rows need large weights).
 * Mini-batch: Adam learning rates from slow to fast, L2 penalties from none to strong. Both: every normalisation.
 */
export const DEFAULT_SWEEP_GRID: Readonly<SweepGrid> = Object.freeze({
  c: Object.freeze([0.01, 0.1, 1, 10, 100, 1000]),
  lr: Object.freeze([1e-3, 3e-3, 1e-2, 3e-2]),
  weightDecay: Object.freeze([0, 1e-4, 1e-3]),
  normalize: Object.freeze([...NORMALIZATIONS]),
});

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

/** What runs the sweep's wide linear pass: tfjs kernels, or one onnxruntime graph per step (faster without tfjs-node). */
export const SWEEP_ENGINES = ['auto', 'tfjs', 'onnxruntime'] as const;
export type SweepEngine = (typeof SWEEP_ENGINES)[number];
