import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from './support/helpers.js';

const script = path.join(repoRoot, 'scripts/install-cuda.mjs');

describe('scripts/install-cuda.mjs (npm run cuda, postinstall)', () => {
  it('asks onnxruntime-node\'s installer for the CUDA 12 provider, overriding .npmrc\'s skip', () => {
    const r = spawnSync(process.execPath, [script, '--dry-run'], { encoding: 'utf8', env: { ...process.env, npm_config_onnxruntime_node_install: 'skip' } });
    assert.equal(r.status, 0, r.stderr);
    const plan = JSON.parse(r.stdout);
    assert.equal(plan.ONNXRUNTIME_NODE_INSTALL, 'cuda12');
    assert.match(plan.script, /onnxruntime-node\/script\/install\.js$/);
  });
  it('as postinstall, does nothing and succeeds where there is no NVIDIA driver', () => {
    const r = spawnSync(process.execPath, [script, '--auto'], { encoding: 'utf8', env: { ...process.env, FEATCACHE_ASSUME_GPU: '0' } });
    assert.equal(r.status, 0);
    assert.equal(r.stdout + r.stderr, '');
  });
  it('as postinstall on a GPU machine that cannot reach NuGet, warns and still succeeds', { skip: process.env.CI ? 'would try to reach NuGet' : false }, () => {
    const r = spawnSync(process.execPath, [script, '--auto'], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, FEATCACHE_ASSUME_GPU: '1' } });
    assert.equal(r.status, 0);
    assert.match(r.stderr, /featcache: (the CUDA execution provider could not be installed|CUDA execution provider installed)/);
  });
});
