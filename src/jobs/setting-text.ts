/**
 * The chosen head setting in words, apart from the train-head job so that the CLI's summary line can say it without
 * loading the job (and with it onnxruntime and Arrow) on `--help`.
 */
import type { TrainHeadResult } from './train-head.js';

export function cText(c: number | null): string {
  return c !== null && Number.isFinite(c) ? String(c) : 'inf';
}

/** The chosen setting in words (log lines and the CLI's summary). */
export function settingText(s: TrainHeadResult['setting']): string {
  if (s.solver === 'stream')
    return `logistic regression (streamed SGD, warm-started from the subsample's probe), normalize ${s.normalize}, C ${cText(s.c)}, ${s.epochs} epochs`;
  if (s.solver === 'lbfgs')
    return `logistic regression (L-BFGS), normalize ${s.normalize}, C ${cText(s.c)} (λ ${s.weightDecay.toPrecision(3)})`;
  return `normalize ${s.normalize}, lr ${s.lr}, weight decay ${s.weightDecay}, ${s.epochs} epochs`;
}
