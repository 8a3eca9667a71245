/**
 * README's SLURM job-array recipe, run for real on a one-node cluster on localhost (CPU, MobileNetV2 int8, a subset of
 * hymenoptera): the merged cache of a 4-task array equals a single-process run, and a task killed with scancel and
 * submitted again leaves every image in the cache exactly once. Skips where Slurm is not installed or cannot start.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { inShard } from '../../src/dataset/split.js';
import { readPartIndex } from '../../src/store/part.js';
import { FeatureCache } from '../../src/store/reader.js';
import { type SlurmCluster, slurm, startSlurm } from '../support/slurm.js';
import { cliPath, hymenoptera, mobilenetModel, needsShared, repoRoot, runCli, tempDir } from '../support/helpers.js';

const TASKS = 4;
const PER_CLASS = 40;
const extractFlags = [
  '--split',
  'train',
  '--follow-symlinks',
  '--model',
  mobilenetModel,
  '--device',
  'cpu',
  '--threads',
  '1',
  '--batch-size',
  '4',
  '--part-rows',
  '4',
  '--progress',
  'false',
];

/** README's job-array script, on CPU. N stays written in the script so `sbatch --array=K` re-runs shard K of the same N. */
function jobScript(data: string, cache: string, out: string): string {
  return [
    '#!/bin/bash',
    `#SBATCH --array=0-${TASKS - 1} --cpus-per-task=1`,
    `#SBATCH --output=${out}/task-%a-%j.out`,
    `cd ${repoRoot}`,
    `${process.execPath} ${cliPath} extract --data ${data} --cache ${cache} ${extractFlags.join(' ')} \\`,
    `  --shard \${SLURM_ARRAY_TASK_ID}/${TASKS}`,
    '',
  ].join('\n');
}

/** Rows per path over every part file of the split (not the reader's de-duplicated view). */
async function rowCounts(cache: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const names = (await fs.readdir(path.join(cache, 'train'))).filter((n) => /^part-.*\.arrow$/.test(n));
  for (const name of names) {
    for (const row of (await readPartIndex(path.join(cache, 'train', name))).rows)
      counts.set(row.path, (counts.get(row.path) ?? 0) + 1);
  }
  return counts;
}

async function assertSameCache(cache: string, reference: string, paths: string[]): Promise<void> {
  const counts = await rowCounts(cache);
  assert.deepEqual([...counts.keys()].sort(), paths, 'every image is in the cache');
  for (const [p, n] of counts) assert.equal(n, 1, `${p} written ${n} times`);
  const got = await (await FeatureCache.open(cache)).read('train');
  const want = await (await FeatureCache.open(reference)).read('train');
  assert.deepEqual(got.paths, want.paths);
  assert.deepEqual([...got.labels], [...want.labels]);
  let worst = 0;
  for (let i = 0; i < want.features.length; i++)
    worst = Math.max(worst, Math.abs(got.features[i]! - want.features[i]!));
  assert.ok(worst <= 1e-5, `features differ from the single-process run by up to ${worst}`);
}

async function waitForJob(cluster: SlurmCluster, job: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await slurm(cluster, 'squeue', ['-h', '-j', job]).catch(() => '')).trim() === '') return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`job ${job} still queued or running after ${timeoutMs / 1000} s`);
}

const sharedMissing = needsShared(mobilenetModel, hymenoptera);

describe('SLURM job array on a one-node cluster', { skip: sharedMissing }, () => {
  let cluster: SlurmCluster | null = null;
  let skip: string | false = false;
  let dir: string;
  let data: string;
  let reference: string;
  let paths: string[];

  before(async () => {
    const started = await startSlurm();
    if ('skip' in started) {
      skip = started.skip;
      return;
    }
    cluster = started;
    dir = await tempDir('featcache-slurm-test-');
    data = path.join(dir, 'data');
    // A subset of hymenoptera/train as symlinks: the same files, fewer of them, so the test stays short.
    for (const cls of ['ants', 'bees']) {
      await fs.mkdir(path.join(data, 'train', cls), { recursive: true });
      const names = (await fs.readdir(path.join(hymenoptera, 'train', cls))).sort().slice(0, PER_CLASS);
      for (const name of names)
        await fs.symlink(path.join(hymenoptera, 'train', cls, name), path.join(data, 'train', cls, name));
    }
    reference = path.join(dir, 'reference');
    const single = await runCli(['extract', '--data', data, '--cache', reference, ...extractFlags]);
    assert.equal(single.code, 0, single.stderr);
    paths = (await (await FeatureCache.open(reference)).read('train')).paths;
    assert.equal(paths.length, 2 * PER_CLASS);
  });

  after(async () => {
    await cluster?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('sbatch --array=0-3 --wait: the merged cache equals a single-process run', async (t) => {
    if (skip) return t.skip(skip);
    const cache = path.join(dir, 'array');
    const out = path.join(dir, 'out-array');
    await fs.mkdir(out);
    const script = path.join(dir, 'array.sh');
    await fs.writeFile(script, jobScript(data, cache, out));
    await slurm(cluster!, 'sbatch', [`--array=0-${TASKS - 1}`, '--wait', script], 300_000).catch(
      async (error: Error) => {
        const logs = await Promise.all((await fs.readdir(out)).map((f) => fs.readFile(path.join(out, f), 'utf8')));
        throw new Error(`sbatch failed: ${error.message}\n${logs.join('\n')}`);
      },
    );
    const shards = (await fs.readdir(path.join(cache, 'train')))
      .filter((n) => n.endsWith('.arrow'))
      .map((n) => /-(\d+of\d+)-/.exec(n)![1]);
    assert.deepEqual(
      [...new Set(shards)].sort(),
      ['0of4', '1of4', '2of4', '3of4'],
      'each array task wrote its own shard',
    );
    await assertSameCache(cache, reference, paths);
  });

  it('a task cancelled mid-run and submitted again leaves every image exactly once', async (t) => {
    if (skip) return t.skip(skip);
    const cache = path.join(dir, 'killed');
    const out = path.join(dir, 'out-killed');
    await fs.mkdir(out);
    const script = path.join(dir, 'killed.sh');
    await fs.writeFile(script, jobScript(data, cache, out));
    const job = (await slurm(cluster!, 'sbatch', ['--parsable', script])).trim().split(';')[0]!;
    const victim = 1;
    const victimRows = paths.filter((p) => inShard({ index: victim, count: TASKS }, p)).length;
    // Cancel as soon as the task has committed its first part, i.e. while it is extracting.
    const deadline = Date.now() + 120_000;
    const committed = async () =>
      (await fs.readdir(path.join(cache, 'train')).catch(() => [] as string[])).some(
        (n) => n.includes(`-${victim}of${TASKS}-`) && n.endsWith('.arrow'),
      );
    while (!(await committed())) {
      assert.ok(Date.now() < deadline, 'task 1 never committed a part');
      await new Promise((r) => setTimeout(r, 5));
    }
    // Freeze the task at once (its lock names its pid): scancel takes longer than the task's remaining images, so
    // without this a fast machine finishes the task before the cancel lands. Slurm then kills the frozen process.
    const owner = JSON.parse(await fs.readFile(path.join(cache, 'train', `.lock-${victim}of${TASKS}`), 'utf8'));
    process.kill(owner.pid, 'SIGSTOP');
    await slurm(cluster!, 'scancel', [`${job}_${victim}`]);
    await waitForJob(cluster!, job, 300_000);
    const before = [...(await rowCounts(cache)).keys()].filter((p) =>
      inShard({ index: victim, count: TASKS }, p),
    ).length;
    assert.ok(
      before > 0 && before < victimRows,
      `the cancelled task had committed ${before} of its ${victimRows} images`,
    );
    await slurm(cluster!, 'sbatch', [`--array=${victim}`, '--wait', script], 300_000);
    await assertSameCache(cache, reference, paths);
  });
});
