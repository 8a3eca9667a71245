import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { checkCuda, describeCudaProblems } from '../src/backbone/cuda-libs.js';
import { repoRoot, runCli, tempDir, tinyModel } from './support/helpers.js';

const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8'));

describe('install-time behaviour (package.json, .npmrc)', () => {
  it('runs nothing at install time, so installing featcache never reaches the network', () => {
    for (const hook of ['preinstall', 'install', 'postinstall']) assert.equal(pkg.scripts[hook], undefined, hook);
    // onnxruntime-node's own postinstall (NuGet) is denied in this project; install-cuda runs it on demand.
    assert.equal(pkg.allowScripts['onnxruntime-node'], false);
  });

  it('keeps no npm config key npm is dropping', () => {
    const npmrc = path.join(repoRoot, '.npmrc');
    if (existsSync(npmrc)) assert.doesNotMatch(readFileSync(npmrc, 'utf8'), /^\s*onnxruntime-node-install/m);
  });

  it('npm run cuda is featcache install-cuda', () => {
    assert.equal(pkg.scripts.cuda, 'node dist/src/cli.js install-cuda');
    assert.equal(pkg.bin['featcache-gpu-smoke'], 'scripts/gpu-smoke');
  });
});

describe('featcache install-cuda (CLI)', () => {
  it(
    "--dry-run plans onnxruntime-node's installer with ONNXRUNTIME_NODE_INSTALL=cuda12 and contacts nothing",
    { skip: process.platform === 'linux' && process.arch === 'x64' ? false : 'linux/x64 only' },
    async () => {
      const r = await runCli(['install-cuda', '--dry-run', '--force', '--json'], {
        env: { HTTPS_PROXY: 'http://127.0.0.1:9' },
      });
      assert.equal(r.code, 0, r.stderr);
      const plan = JSON.parse(r.stdout);
      assert.equal(plan.status, 'planned');
      assert.deepEqual(plan.installerEnv, {
        ONNXRUNTIME_NODE_INSTALL: 'cuda12',
        GLOBAL_AGENT_HTTPS_PROXY: 'http://127.0.0.1:9',
      });
    },
  );

  it('rejects a bad --timeout in one line', async () => {
    const r = await runCli(['install-cuda', '--timeout', '-1']);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim(), 'featcache: --timeout: expected a positive number of seconds, got -1');
  });
});

describe('scripts/gpu-smoke', () => {
  const problems = describeCudaProblems(checkCuda());
  it(
    'on a machine without CUDA, exits 1 and names each missing piece with how to get it',
    { skip: problems.length === 0 ? 'CUDA is complete on this machine' : false },
    async () => {
      const model = path.join(await tempDir(), 'tiny.onnx');
      await fs.writeFile(model, tinyModel({ size: 8 }));
      const r = spawnSync(
        process.execPath,
        [path.join(repoRoot, 'scripts/gpu-smoke'), '--model', model, '--batch-size', '2', '--batches', '1'],
        { encoding: 'utf8', timeout: 60_000 },
      );
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /needs CUDA 12\.x and cuDNN 9\.x; missing here:/);
      for (const problem of problems) assert.ok(r.stderr.includes(`  - ${problem}`), problem);
    },
  );
});

describe('npm run bench (scripts/bench.ts)', () => {
  it('leads with ratios and the machine, and runs the feature modules that exist (stand-ins here)', async () => {
    const dir = await tempDir('featcache-bench-modules-');
    await fs.writeFile(
      path.join(dir, 'bench-int8.js'),
      'export async function benchInt8({ quick, log }) { log("int8 stand-in"); return { quick, ratioInt8OverFp32: 1.7, imagesPerSecond: 5 }; }\n',
    );
    await fs.writeFile(
      path.join(dir, 'bench-head.js'),
      'export async function benchHead() { throw new Error("head bench broke"); }\n',
    );
    const r = spawnSync(process.execPath, [path.join(repoRoot, 'dist/scripts/bench.js')], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, BENCH_ONLY: 'int8,head,serve', BENCH_QUICK: '1', BENCH_MODULE_DIR: dir },
    });
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual(Object.keys(report).slice(0, 2), ['ratios', 'machine']);
    assert.deepEqual(report.ratios, { 'feature.int8': { ratioInt8OverFp32: 1.7 } });
    assert.equal(report.machine.cpuModel, os.cpus()[0]!.model.trim());
    assert.equal(report.machine.logicalCores, os.cpus().length);
    assert.match(report.machine.onnxruntime, /^\d+\.\d+\.\d+$/);
    assert.equal(report.features.int8.quick, true);
    assert.deepEqual(report.features.head, { error: 'head bench broke' });
    assert.match(report.features.serve.skipped, /scripts\/bench-serve\.ts is not in this build/);
    assert.equal(report.extract, undefined);
    assert.match(r.stderr, /int8 stand-in/);
  });
});
