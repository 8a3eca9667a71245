#!/usr/bin/env node
// Fetches onnxruntime-node's CUDA 12 execution provider from NuGet — the download `.npmrc` skips so that
// `npm ci` works offline. Run it on a machine with an NVIDIA GPU: `npm run cuda`.
// As `postinstall` (with --auto) it runs only when an NVIDIA driver is present and never fails the install.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const auto = process.argv.includes('--auto');
const dryRun = process.argv.includes('--dry-run');
const hasNvidiaDriver = existsSync('/proc/driver/nvidia/version') || process.env.FEATCACHE_ASSUME_GPU === '1';

if (auto && (!hasNvidiaDriver || process.env.FEATCACHE_SKIP_CUDA === '1')) process.exit(0);

let script;
try {
  script = require.resolve('onnxruntime-node/script/install');
} catch {
  console.error('featcache: onnxruntime-node is not installed; run npm ci first');
  process.exit(auto ? 0 : 1);
}
// The environment variable outranks the `onnxruntime-node-install=skip` that .npmrc passes to npm scripts.
const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: process.env.FEATCACHE_CUDA_FLAVOUR ?? 'cuda12' };
if (dryRun) {
  console.log(JSON.stringify({ script, ONNXRUNTIME_NODE_INSTALL: env.ONNXRUNTIME_NODE_INSTALL, hasNvidiaDriver }));
  process.exit(0);
}
console.error('featcache: fetching the onnxruntime CUDA execution provider (NuGet)…');
const result = spawnSync(process.execPath, [script], { env, stdio: 'inherit' });
if (result.status !== 0) {
  console.error(`featcache: the CUDA execution provider could not be installed (exit ${result.status}); featcache will run on CPU. Retry with: npm run cuda`);
  process.exit(auto ? 0 : 1);
}
console.error("featcache: CUDA execution provider installed; check it with scripts/gpu-smoke");
