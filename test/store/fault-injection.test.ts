/**
 * Issue 27's seeded fault injection: 50 times, flip one random byte of a random part file (or its index) of a small
 * cache; after each flip every reader — export in all formats, train-head, compact, info --check — must either
 * refuse with the remedy or give exactly the undamaged cache's result. Never different numbers without an error.
 * (predict reads no cache: it reads a head, so a head equal to the undamaged one predicts the same.)
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { tableFromIPC } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { FeatcacheError } from '../../src/errors.js';
import { FORMATS } from '../../src/export/formats.js';
import { compactSplit } from '../../src/jobs/compact.js';
import { exportSplit } from '../../src/jobs/export.js';
import { info } from '../../src/jobs/info.js';
import { trainHead } from '../../src/jobs/train-head.js';
import { FeatureCache } from '../../src/store/reader.js';
import { tempDir } from '../support/helpers.js';
import { writeSyntheticCache } from '../support/synthetic-cache.js';

const FLIPS = 50;
const SEED = 20261202;
const REMEDY = /re-run extract for this split/;

/** mulberry32: a small seeded generator, so a failing flip can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An export's data without what legitimately changes between runs (provenance: times, the cache's path). */
async function exportedData(format: string, out: string): Promise<string> {
  if (format === 'npy') {
    const names = (await fs.readdir(out)).filter((n) => n.endsWith('.npy')).sort();
    return JSON.stringify(
      await Promise.all(names.map(async (n) => [n, (await fs.readFile(path.join(out, n))).toString('base64')])),
    );
  }
  const bytes = await fs.readFile(out);
  if (format === 'arrow' || format === 'parquet') {
    const ipc = format === 'arrow' ? bytes : parquet.readParquet(bytes).intoIPCStream();
    return JSON.stringify([...tableFromIPC(ipc)].map((row) => row.toJSON()));
  }
  return bytes.toString('base64');
}

type Outcome = { refused: string } | { data: string };

async function attempt(run: () => Promise<string>): Promise<Outcome> {
  try {
    return { data: await run() };
  } catch (error) {
    if (!(error instanceof FeatcacheError)) throw error;
    return { refused: error.message };
  }
}

/** Every reader's outcome on `cache`; `scratch` is where outputs go. compact runs last: it rewrites the cache. */
async function readAll(cache: string, scratch: string): Promise<Record<string, Outcome>> {
  const outcomes: Record<string, Outcome> = {};
  await fs.mkdir(scratch, { recursive: true });
  for (const format of FORMATS) {
    const out = path.join(scratch, `out-${format}`);
    outcomes[`export ${format}`] = await attempt(async () => {
      await exportSplit({ cache, split: 'train', format, out });
      return exportedData(format, out);
    });
  }
  outcomes['train-head'] = await attempt(async () => {
    const head = path.join(scratch, 'head');
    await trainHead({ cache, head, sweep: false, solver: 'lbfgs', valSplit: 'none' });
    return (await fs.readFile(path.join(head, 'weights.bin'))).toString('base64');
  });
  outcomes['info --check'] = await attempt(async () => {
    const r = await info({ cache, check: true });
    if (r.healthy !== true)
      throw new FeatcacheError(
        `damaged: ${r.splits.flatMap((s) => s.damaged.map((d) => d.problem)).join('; ')}; re-run extract for this split`,
        1,
      );
    return 'healthy';
  });
  outcomes.compact = await attempt(async () => {
    await compactSplit({ cache, split: 'train', partRows: 4 });
    const set = await (await FeatureCache.open(cache)).read('train');
    return JSON.stringify([set.paths, Array.from(set.labels), Array.from(set.features)]);
  });
  return outcomes;
}

describe(`fault injection: ${FLIPS} seeded byte flips in parts and indexes`, () => {
  let reference: string;
  let expected: Record<string, Outcome>;
  before(async () => {
    reference = path.join(await tempDir(), 'cache');
    await writeSyntheticCache(reference);
    const copy = path.join(await tempDir(), 'cache');
    await fs.cp(reference, copy, { recursive: true });
    expected = await readAll(copy, path.join(path.dirname(copy), 'out'));
    for (const [reader, outcome] of Object.entries(expected))
      assert.ok(
        'data' in outcome,
        `the undamaged cache reads (${reader}: ${'refused' in outcome ? outcome.refused : ''})`,
      );
  });

  it('every reader refuses with the remedy or equals the undamaged result', async () => {
    const next = random(SEED);
    const work = await tempDir();
    let refusals = 0;
    for (let flip = 0; flip < FLIPS; flip++) {
      const cache = path.join(work, `cache-${flip}`);
      await fs.cp(reference, cache, { recursive: true });
      const files = (await fs.readdir(path.join(cache, 'train')))
        .filter((n) => n.endsWith('.arrow') || n.endsWith('.index.json'))
        .sort();
      const victim = path.join(cache, 'train', files[Math.floor(next() * files.length)]!);
      const bytes = await fs.readFile(victim);
      const offset = Math.floor(next() * bytes.length);
      bytes[offset] = bytes[offset]! ^ (1 + Math.floor(next() * 255));
      await fs.writeFile(victim, bytes);
      const what = `flip ${flip} (seed ${SEED}): ${path.basename(victim)} byte ${offset}`;
      const outcomes = await readAll(cache, path.join(work, `out-${flip}`));
      for (const [reader, outcome] of Object.entries(outcomes)) {
        if ('refused' in outcome) {
          assert.match(outcome.refused, REMEDY, `${what}: ${reader} refuses with the remedy`);
          refusals++;
        } else
          assert.deepEqual(
            outcome,
            expected[reader],
            `${what}: ${reader} succeeded, so it must equal the undamaged result`,
          );
      }
      await fs.rm(cache, { recursive: true, force: true });
      await fs.rm(path.join(work, `out-${flip}`), { recursive: true, force: true });
    }
    assert.ok(refusals > 0, 'the flips were noticed at all');
  });
});
