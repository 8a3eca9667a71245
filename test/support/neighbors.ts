/**
 * Real features for the neighbour tests (monkeys through the pretrained MobileNetV2-int8, extracted once per test
 * file) and scikit-learn's brute-force kNN as the independent reference.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { extract } from '../../src/jobs/extract.js';
import { mobilenetModel, needsShared, repoRoot, sharedDir, tempDir } from './helpers.js';

export const monkeys = path.join(sharedDir, 'data/monkeys');
export const python = '/usr/bin/python3';
const hasSklearn = spawnSync(python, ['-c', 'import sklearn, numpy'], { encoding: 'utf8' }).status === 0;
export const needsSklearn = hasSklearn ? false : `needs ${python} with scikit-learn (apt-get install python3-sklearn)`;
export const needsMonkeys = needsShared(mobilenetModel, monkeys);

/** Extracts the given monkeys splits (`training`, `validation`) into a new cache; returns its directory. */
export async function monkeysCache(splits: string[], dir?: string): Promise<string> {
  const cache = dir ?? path.join(await tempDir('featcache-neighbors-'), 'features');
  for (const split of splits)
    await extract({ data: monkeys, split, model: mobilenetModel, tap: 'avgpool', cache, device: 'cpu' });
  return cache;
}

export interface Reference {
  indices: number[][];
  distances: number[][];
}

/** scikit-learn NearestNeighbors(algorithm='brute'); `reference` null = self-kNN without the row itself. */
export async function sklearnKnn(
  query: Float32Array,
  reference: Float32Array | null,
  dim: number,
  k: number,
  metric: 'cosine' | 'l2',
): Promise<Reference> {
  const dir = await tempDir('featcache-sklearn-');
  const q = path.join(dir, 'q.f32');
  await fs.writeFile(q, Buffer.from(query.buffer, query.byteOffset, query.byteLength));
  let r = 'self';
  if (reference) {
    r = path.join(dir, 'r.f32');
    await fs.writeFile(r, Buffer.from(reference.buffer, reference.byteOffset, reference.byteLength));
  }
  const run = spawnSync(
    python,
    [path.join(repoRoot, 'test/neighbors/fixtures/sklearn_knn.py'), q, r, String(dim), String(k), metric],
    { encoding: 'utf8', maxBuffer: 1 << 30 },
  );
  assert.equal(run.status, 0, run.stderr);
  await fs.rm(dir, { recursive: true, force: true });
  return JSON.parse(run.stdout) as Reference;
}
