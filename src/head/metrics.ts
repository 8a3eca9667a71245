/** Classification metrics from predicted probabilities: top-1, top-k, per-class accuracy and the confusion matrix. */
export interface Metrics {
  count: number;
  top1: number;
  top5: number | null;
  perClass: { name: string; count: number; accuracy: number | null }[];
  /** confusion[true][predicted] */
  confusion: number[][];
}

/** Indices of the k largest values of row `row`, best first. */
export function topK(probabilities: Float32Array, classes: number, row: number, k: number): number[] {
  const base = row * classes;
  return Array.from({ length: classes }, (_, c) => c)
    .sort((a, b) => probabilities[base + b]! - probabilities[base + a]! || a - b)
    .slice(0, k);
}

export function classificationMetrics(probabilities: Float32Array, labels: Int32Array, classNames: string[]): Metrics {
  const classes = classNames.length;
  const confusion = classNames.map(() => new Array<number>(classes).fill(0));
  let top1 = 0;
  let top5 = 0;
  for (let r = 0; r < labels.length; r++) {
    const ranked = topK(probabilities, classes, r, Math.min(5, classes));
    const truth = labels[r]!;
    confusion[truth]![ranked[0]!]! += 1;
    if (ranked[0] === truth) top1++;
    if (ranked.includes(truth)) top5++;
  }
  const n = labels.length;
  return {
    count: n,
    top1: n > 0 ? top1 / n : 0,
    top5: classes >= 5 && n > 0 ? top5 / n : null,
    perClass: classNames.map((name, c) => {
      const count = confusion[c]!.reduce((a, b) => a + b, 0);
      return { name, count, accuracy: count > 0 ? confusion[c]![c]! / count : null };
    }),
    confusion,
  };
}
