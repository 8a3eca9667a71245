import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { CUDA_PROVIDER_FILES, CUDA_REQUIREMENTS } from '../../src/backbone/cuda-libs.js';
import { CUDA_PLATFORM, installCuda, installerEnvironment } from '../../src/jobs/install-cuda.js';
import { tempDir } from '../support/helpers.js';

const here =
  `${process.platform}/${process.arch}` === CUDA_PLATFORM
    ? false
    : `onnxruntime-node fetches a CUDA provider only on ${CUDA_PLATFORM}`;
/** Every CUDA library present, so the post-install check depends only on what a test puts there. */
async function allLibraries(): Promise<{ searchDirs: string[]; ldconfigOutput: null }> {
  const dir = await tempDir('featcache-libs-');
  for (const lib of CUDA_REQUIREMENTS.libraries) await fs.writeFile(path.join(dir, lib.soname), '');
  return { searchDirs: [dir], ldconfigOutput: null };
}

/** A stand-in for onnxruntime-node's installer: a script with the given body, run by node. */
async function fakeInstaller(body: string): Promise<string> {
  const file = path.join(await tempDir('featcache-installer-'), 'install.cjs');
  await fs.writeFile(file, body);
  return file;
}

/** A port on 127.0.0.1 with nothing listening: connections are refused at once, offline. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe('installCuda', { skip: here }, () => {
  it('asks onnxruntime-node for cuda12 by environment variable and passes HTTPS_PROXY/NO_PROXY to its global-agent', () => {
    assert.deepEqual(installerEnvironment({}), { ONNXRUNTIME_NODE_INSTALL: 'cuda12' });
    assert.deepEqual(installerEnvironment({ HTTPS_PROXY: 'http://proxy:3128', NO_PROXY: 'localhost' }), {
      ONNXRUNTIME_NODE_INSTALL: 'cuda12',
      GLOBAL_AGENT_HTTPS_PROXY: 'http://proxy:3128',
      GLOBAL_AGENT_NO_PROXY: 'localhost',
    });
    assert.equal(
      installerEnvironment({ HTTPS_PROXY: 'http://a', GLOBAL_AGENT_HTTPS_PROXY: 'http://b' }).GLOBAL_AGENT_HTTPS_PROXY,
      'http://b',
    );
  });

  it("plans onnxruntime-node's own installer without running it", async () => {
    const r = await installCuda({ dryRun: true, providerDir: await tempDir() });
    assert.equal(r.status, 'planned');
    assert.match(r.installer, /onnxruntime-node\/script\/install\.js$/);
  });

  it('does nothing when the provider is already in place, and reports missing libraries', async () => {
    const providerDir = await tempDir();
    for (const f of CUDA_PROVIDER_FILES) await fs.writeFile(path.join(providerDir, f), '');
    const marker = path.join(providerDir, 'installer-ran');
    const installer = await fakeInstaller(`require('fs').writeFileSync(${JSON.stringify(marker)}, '')`);
    const r = await installCuda({ installer, providerDir, libraries: { searchDirs: [], ldconfigOutput: null } });
    assert.equal(r.status, 'present');
    assert.ok(!existsSync(marker));
    assert.equal(r.problems.length, CUDA_REQUIREMENTS.libraries.length);
    assert.ok(r.problems.some((p) => p.startsWith('libcudnn.so.9 (cuDNN 9)')));
  });

  it('runs the installer, forwards its output, and checks the files landed', async () => {
    const providerDir = await tempDir();
    const installer = await fakeInstaller(`
      const fs = require('fs'), path = require('path');
      if (process.env.ONNXRUNTIME_NODE_INSTALL !== 'cuda12') process.exit(3);
      for (const f of ${JSON.stringify(CUDA_PROVIDER_FILES)}) fs.writeFileSync(path.join(${JSON.stringify(providerDir)}, f), '');
      console.log('Extracting runtimes/linux-x64/native/libonnxruntime_providers_cuda.so');`);
    const lines: string[] = [];
    const r = await installCuda({ installer, providerDir, log: (l) => lines.push(l), libraries: await allLibraries() });
    assert.equal(r.status, 'installed');
    assert.deepEqual(r.problems, []);
    assert.ok(
      lines.some((l) => l.includes('Extracting runtimes/linux-x64')),
      lines.join('\n'),
    );

    const empty = await tempDir();
    await assert.rejects(
      installCuda({ installer: await fakeInstaller(''), providerDir: empty }),
      /installer finished but libonnxruntime_providers_cuda\.so, libonnxruntime_providers_shared\.so is not in/,
    );
  });

  it('fails with the network reason when NuGet cannot be reached (the real installer, through a refused proxy)', async () => {
    const providerDir = await tempDir();
    const env = { PATH: process.env.PATH, HTTPS_PROXY: `http://127.0.0.1:${await closedPort()}` };
    await assert.rejects(installCuda({ providerDir, env, timeoutMs: 60_000 }), (e: Error) => {
      assert.match(
        e.message,
        /^install-cuda: could not fetch the CUDA provider from NuGet \(Error: connect ECONNREFUSED 127\.0\.0\.1:\d+\); featcache still runs on CPU; retry with 'npx featcache install-cuda'/,
      );
      return true;
    });
    assert.deepEqual(await fs.readdir(providerDir), []);
  });

  it('gives up on an installer that hangs, after timeoutMs', async () => {
    const installer = await fakeInstaller('setTimeout(() => {}, 60_000);');
    await assert.rejects(
      installCuda({ installer, providerDir: await tempDir(), timeoutMs: 300 }),
      /did not finish within 0\.3 s/,
    );
  });

  it('rejects a non-positive timeout by its option name', async () => {
    await assert.rejects(
      installCuda({ timeoutMs: 0 }),
      /^FeatcacheError: timeoutMs: expected a positive number of milliseconds, got 0$/,
    );
  });
});
