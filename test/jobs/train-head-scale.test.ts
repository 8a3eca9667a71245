import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { writeSyntheticCache } from '../../scripts/synthetic-cache.js';
import { loadTf } from '../../src/head/runtime.js';
import { loadHead } from '../../src/head/saved.js';
import { BASE_BYTES, HOLDOUT_CAP, PROBE_WORK_LIMIT, chooseScale, planScale } from '../../src/jobs/train-head-scale.js';
import { minibatchSweepLine, trainHead } from '../../src/jobs/train-head.js';
import { cliPath, runCli, tempDir } from '../support/helpers.js';

const MB = 2 ** 20;

describe('chooseScale: solver auto by the cache size, said in one line', () => {
  it('keeps the probe where it is fast and fits, streams above the work limit or the memory budget', () => {
    const small = chooseScale(4000, 64, 8, 2048 * MB);
    assert.equal(small.stream, false);
    assert.match(small.why, /4000 rows × 64 × 8 classes = 2\.0e\+6 multiply-adds per pass, within the probe's limit/);
    // Just over the work limit, well within memory.
    const rows = Math.floor(PROBE_WORK_LIMIT / (2048 * 100)) + 1;
    const work = chooseScale(rows, 2048, 100, 64 * 1024 * MB);
    assert.equal(work.stream, true);
    assert.match(work.why, /over the probe's limit of 1\.5e\+9; sweeping on a subsample and streaming the final fit/);
    assert.equal(chooseScale(rows - 1, 2048, 100, 64 * 1024 * MB).stream, false);
    // 100k × 2048 × 4 bytes held ~4 times is over 2 GB whatever the work.
    const memory = chooseScale(100_000, 2048, 2, 2048 * MB);
    assert.equal(memory.stream, true);
    assert.match(memory.why, /over the memory budget of 2\.00 GiB/);
    assert.ok(!memory.why.includes('\n'));
  });
});

describe('planScale', () => {
  it("keeps the hold-out's rows from the scan when they fit an eighth of the budget, reads them again when not", () => {
    const gib = 2 ** 30;
    // 1 M × 2048 × 1,000 in 2 GiB: 20,000 rows × 8 KiB = 156 MiB, under (2 GiB − base) / 8.
    const big = planScale(1_000_000, 50_000, 2048, 1000, 2 * gib, 0.02);
    assert.equal(big.holdoutRows, HOLDOUT_CAP);
    assert.equal(big.keepHoldout, true);
    // The same rows at 65,536-d (512 KiB each) would need ~10 GiB.
    const wide = planScale(1_000_000, 50_000, 65_536, 1000, 2 * gib, 0.02);
    assert.equal(wide.keepHoldout, false);
    assert.ok(wide.holdoutRows * 65_536 * 4 > (2 * gib - BASE_BYTES) / 8);
  });
});

describe('train-head at scale: streaming from the cache (small synthetic caches)', () => {
  let dir: string;
  let cache: string;
  before(async () => {
    dir = await tempDir();
    cache = path.join(dir, 'features');
    await writeSyntheticCache(cache, {
      rows: 4000,
      valRows: 800,
      dim: 64,
      classes: 8,
      partRows: 512,
      seed: 1,
      noise: 3,
    });
  });

  it('auto streams when the in-memory probe would exceed --memory, says why, and saves a loadable calibrated head', async () => {
    const lines: string[] = [];
    const head = path.join(dir, 'head-auto');
    // The in-memory path is estimated at 320 MiB + 4 × 1 MiB: a 322 MiB budget tips it.
    const r = await trainHead({ cache, head, memory: 322, log: (l) => lines.push(l) });
    const solverLines = lines.filter((l) => l.startsWith('train-head: solver'));
    assert.equal(solverLines.length, 1, lines.join('\n'));
    assert.match(
      solverLines[0]!,
      /^train-head: solver stream \(auto: 4000 rows × 64 × 8 classes: .*over the memory budget of 322 MiB/,
    );
    assert.equal(r.setting.solver, 'stream');
    assert.ok(r.scale && r.scale.subsampleRows > 0 && r.scale.holdoutRows > 0);
    assert.ok(
      r.stages &&
        ['scan', 'sweep', 'warmStart', 'epochs', 'temperature', 'evaluate', 'save'].every((k) => k in r.stages!),
    );
    assert.ok(lines.some((l) => /subsample of \d+ rows for the sweep/.test(l)));
    // The 20 % hold-out is over REFIT_SHARE: the temperature comes from the fold model, the saved head from a refit
    // on every labelled row.
    assert.equal(r.scale.refit, true);
    assert.equal(r.trainRows, 4000);
    assert.ok(
      lines.some((l) => l.startsWith('train-head: refit on all 4000 rows')),
      lines.join('\n'),
    );
    assert.ok(r.metrics.top1 > 0.6, `val top-1 ${r.metrics.top1}`);
    assert.ok(
      r.calibration.after.nll <= r.calibration.before.nll + 1e-9,
      'the temperature does not worsen val NLL here',
    );
    const { tf } = await loadTf('auto');
    const loaded = await loadHead(tf, head);
    assert.equal(loaded.info.options.solver, 'stream');
    assert.equal(loaded.info.temperature, r.temperature);

    // The same cache within the budget: the probe, with the reason on the one solver line.
    const probeLines: string[] = [];
    const p = await trainHead({ cache, head: path.join(dir, 'head-probe'), log: (l) => probeLines.push(l) });
    assert.equal(p.setting.solver, 'lbfgs');
    assert.ok(probeLines.includes('train-head: solver lbfgs (the default for a linear head)'), probeLines.join('\n'));
    const sizeLines = probeLines.filter((l) => l.startsWith('train-head: cache size'));
    assert.equal(sizeLines.length, 1);
    assert.match(
      sizeLines[0]!,
      /4000 rows × 64 × 8 classes = 2\.0e\+6 multiply-adds per pass, within the probe's limit/,
    );
    // Streamed and in-memory heads on the same rows agree on val within a few points (the bench holds 0.5 at scale).
    assert.ok(Math.abs(p.metrics.top1 - r.metrics.top1) < 0.03, `${p.metrics.top1} vs ${r.metrics.top1}`);

    // A hold-out within REFIT_SHARE: the fold model is saved, trained on the rows outside the hold-out only.
    const small: string[] = [];
    const f = await trainHead({
      cache,
      head: path.join(dir, 'head-fold'),
      memory: 322,
      holdoutFraction: 0.04,
      log: (l) => small.push(l),
    });
    assert.equal(f.scale!.refit, false);
    assert.equal(f.trainRows + f.scale!.holdoutRows, 4000);
    assert.ok(f.scale!.holdoutRows > 0 && f.scale!.holdoutRows <= 0.05 * 4000, `${f.scale!.holdoutRows}`);
    assert.ok(!small.some((l) => l.includes('refit')), small.join('\n'));
  });

  it("keeps the hold-out's rows from the scan for the temperature: the same head and temperature as reading them again", async () => {
    const kept: string[] = [];
    const a = await trainHead({ cache, head: path.join(dir, 'head-kept'), memory: 322, log: (l) => kept.push(l) });
    assert.equal(a.scale!.holdoutFromScan, true);
    assert.ok(
      kept.some((l) => l.includes('rows for the temperature (kept from the scan)')),
      kept.join('\n'),
    );
    // The scan's rows against a second read of train (ScaleOptions.holdoutFromScan, not a CLI flag).
    const again = { cache, head: path.join(dir, 'head-reread'), memory: 322, holdoutFromScan: false };
    const b = await trainHead(again);
    assert.equal(b.scale!.holdoutFromScan, false);
    assert.equal(a.scale!.holdoutRows, b.scale!.holdoutRows);
    // Commit order against a shuffled read: the same rows, summed in another order.
    assert.ok(Math.abs(a.temperature - b.temperature) < 1e-4, `${a.temperature} vs ${b.temperature}`);
    assert.equal(a.metrics.top1, b.metrics.top1);
  });

  it('keeps peak RSS under a small --memory budget (child process, split larger than the budget allows in memory)', async () => {
    const big = path.join(dir, 'big');
    await writeSyntheticCache(big, {
      rows: 20_000,
      valRows: 2000,
      dim: 1024,
      classes: 10,
      partRows: 1024,
      seed: 2,
      noise: 30,
    });
    const r = await runCli([
      'train-head',
      '--cache',
      big,
      '--head',
      path.join(dir, 'head-big'),
      '--memory',
      '400',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.setting.solver, 'stream');
    assert.match(result.scale.why, /over the memory budget of 400 MiB/);
    assert.ok(result.scale.peakRssMb <= 400, `peak RSS ${result.scale.peakRssMb} MB`);
  });

  for (const signal of ['SIGINT', 'SIGKILL'] as const) {
    it(`a ${signal} during training leaves the previous head intact`, async () => {
      const head = path.join(dir, `head-${signal}`);
      const first = await runCli([
        'train-head',
        '--cache',
        cache,
        '--head',
        head,
        '--solver',
        'stream',
        '--epochs',
        '1',
      ]);
      assert.equal(first.code, 0, first.stderr);
      const snapshot = async () => {
        const names = (await fs.readdir(head)).sort();
        const hashes = await Promise.all(
          names.map(async (n) =>
            createHash('sha256')
              .update(await fs.readFile(path.join(head, n)))
              .digest('hex'),
          ),
        );
        return { names, hashes, siblings: (await fs.readdir(dir)).sort() };
      };
      const before = await snapshot();
      const child = spawn(
        process.execPath,
        [
          cliPath,
          'train-head',
          '--cache',
          cache,
          '--head',
          head,
          '--solver',
          'stream',
          '--epochs',
          '5000',
          '--seed',
          '9',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      await new Promise<void>((resolve) =>
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
          if (stderr.includes('train-head: streaming fit on')) resolve();
        }),
      );
      // Inside the epochs: the fit has started and has thousands of epochs to go.
      await new Promise((r) => setTimeout(r, 1500));
      child.kill(signal);
      const code = await exited;
      if (signal === 'SIGINT') {
        assert.equal(code, 130, stderr);
        assert.match(stderr, /interrupted; nothing was written/);
      }
      assert.deepEqual(await snapshot(), before);
    });
  }
});

describe('mini-batch sweep: says what it sweeps and how many fits', () => {
  it('counts only the axes left free; given options are listed as fixed', () => {
    const grid = {
      c: [1],
      lr: [0.1, 0.01, 0.001],
      weightDecay: [0, 1e-4, 1e-3],
      normalize: ['none', 'l2', 'standard'] as const,
    };
    assert.equal(
      minibatchSweepLine({ ...grid, normalize: [...grid.normalize] }, ['epochs'], 5, 100),
      'train-head: mini-batch sweep over lr (3) × weight decay (3) × normalize (3): 27 settings, 5 epochs each; fixed: epochs',
    );
    assert.equal(
      minibatchSweepLine({ ...grid, lr: [0.05], normalize: ['l2'] }, ['lr', 'normalize'], null, 100),
      'train-head: mini-batch sweep over weight decay (3): 3 settings, epoch count chosen up to 100 on the hold-out; fixed: lr, normalize',
    );
  });
});
