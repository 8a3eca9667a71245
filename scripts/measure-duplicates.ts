/**
 * Picks the near-duplicate threshold: plants edited copies of validation images into training (test/support/plant)
 * and prints recall and precision of the train↔val pairs over a sweep of cosine thresholds, as JSON.
 * Usage: node dist/scripts/measure-duplicates.js [perClassTrain] [plantPerClass]
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { duplicates } from '../src/jobs/duplicates.js';
import { extract } from '../src/jobs/extract.js';
import { plantedDataset, samePicture } from '../test/support/plant.js';

const shared = path.resolve(process.env.FEATCACHE_SHARED_DIR ?? '../shared');
const monkeys = path.join(shared, 'data/monkeys');
const model = path.join(shared, 'models/mobilenetv2-12-int8.onnx');

export interface Sweep {
  threshold: number;
  recall: number;
  precision: number;
  predicted: number;
  /** Flagged training images that are not planted but show the same picture as a validation image of their group. */
  natural: number;
}

async function anySame(data: string, file: string, others: string[]): Promise<boolean> {
  for (const o of others) if (await samePicture(path.join(data, file), path.join(data, o))) return true;
  return false;
}

/** Recall and precision of planted train↔val pairs at each threshold, from one duplicates run per threshold. */
export async function sweep(
  cache: string,
  data: string,
  planted: { source: string; copy: string }[],
  thresholds: number[],
) {
  // Per training image: flagged when its group holds a validation image; right when it is that image's planted copy,
  // or the same picture by pixels (the data set's own train/val copies are leaks too).
  const copyOf = new Map(planted.map((p) => [p.copy, p.source]));
  const out: Sweep[] = [];
  for (const threshold of thresholds) {
    const { groups } = await duplicates({ cache, threshold });
    let predicted = 0;
    let found = 0;
    let natural = 0;
    for (const g of groups) {
      const val = new Set(g.members.filter((m) => m.split === 'validation').map((m) => m.path));
      if (val.size === 0) continue;
      for (const t of g.members.filter((m) => m.split === 'training')) {
        predicted++;
        if (val.has(copyOf.get(t.path) ?? '')) found++;
        else if (await anySame(data, t.path, [...val])) natural++;
      }
    }
    out.push({
      threshold,
      recall: found / planted.length,
      precision: predicted ? (found + natural) / predicted : 1,
      predicted,
      natural,
    });
  }
  return out;
}

async function main() {
  const perClassTrain = Number(process.argv[2] ?? 40);
  const plantPerClass = Number(process.argv[3] ?? 10);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-dup-'));
  const data = path.join(dir, 'data');
  const planted = await plantedDataset(monkeys, data, { perClassTrain, perClassVal: plantPerClass + 5, plantPerClass });
  const cache = path.join(dir, 'features');
  for (const split of ['training', 'validation'])
    await extract({ data, split, model, tap: 'avgpool', cache, device: 'cpu' });
  const thresholds = [0.85, 0.88, 0.89, 0.9, 0.91, 0.92, 0.93, 0.95];
  console.log(
    JSON.stringify(
      { planted: planted.length, perClassTrain, sweep: await sweep(cache, data, planted, thresholds) },
      null,
      1,
    ),
  );
  await fs.rm(dir, { recursive: true, force: true });
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
