/** The numpy confident-learning reference (test/support/confident_learning.py), run on Debian's python3. */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { repoRoot } from './helpers.js';

const python = '/usr/bin/python3';
const script = path.join(repoRoot, 'test/support/confident_learning.py');

/** Why the reference cannot run here, or false. */
export const needsNumpy: string | false = (() => {
  try {
    execFileSync(python, ['-c', 'import numpy'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'needs /usr/bin/python3 with numpy (apt-get install python3-numpy) for the confident-learning reference';
  }
})();

export interface ReferenceCl {
  thresholds: (number | null)[];
  confidentJoint: number[];
  joint: number[];
  noiseMatrix: number[];
  flagged: number[];
}

/** The reference on exactly these float32 probabilities (JSON carries each float32 exactly as a double). */
export function referenceConfidentLearning(
  probabilities: Float32Array,
  labels: Int32Array,
  classes: number,
  filterBy = 'prune_by_noise_rate',
): ReferenceCl {
  const input = JSON.stringify({
    probabilities: Array.from(probabilities),
    labels: Array.from(labels),
    classes,
    filterBy,
  });
  return JSON.parse(execFileSync(python, [script], { input, maxBuffer: 1 << 28 }).toString()) as ReferenceCl;
}
