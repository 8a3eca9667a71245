/**
 * The package as a consumer gets it: one `npm pack`, one install into a fresh project, then the CLI, a tiny extract
 * and a TypeScript compile against the installed types. The install must not need any host but the npm registry
 * (onnxruntime-node's NuGet download is denied the way README says) and must not hang (it runs under a timeout).
 * FEATCACHE_SKIP_PACK_TEST=1 skips it (≈40 s).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CUDA_PROVIDER_FILES, checkCuda, describeCudaProblems } from '../src/backbone/cuda-libs.js';
import { repoRoot, tempDir, tinyModel, writeImageFolder } from './support/helpers.js';

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const skip = process.env.FEATCACHE_SKIP_PACK_TEST === '1' ? 'FEATCACHE_SKIP_PACK_TEST=1' : false;
const version = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')).version as string;

function run(command: string, args: string[], cwd: string, timeoutMs: number, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(command, args, {
    cwd,
    encoding: 'utf8',
    timeout: timeoutMs,
    env: { ...process.env, ...env },
    maxBuffer: 1 << 26,
  });
  return { code: r.status, signal: r.signal, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

describe('the packed package, installed into a fresh project', { skip }, () => {
  let work = '';
  let consumer = '';
  let tarball = '';
  let installLog = '';

  before(async () => {
    work = await tempDir('featcache-pack-');
    // dist/ is what the tests run from and is already built: pack it as is, without re-running tsc under their feet.
    const packed = run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', work], repoRoot, 120_000);
    assert.equal(packed.code, 0, packed.out);
    tarball = path.join(work, `featcache-${version}.tgz`);
    consumer = path.join(work, 'consumer');
    await fs.mkdir(consumer);
    // README's consumer setup: deny onnxruntime-node's install script (its NuGet download) in the consumer's package.json.
    await fs.writeFile(
      path.join(consumer, 'package.json'),
      JSON.stringify({
        name: 'consumer',
        version: '1.0.0',
        private: true,
        type: 'module',
        allowScripts: { 'onnxruntime-node': false },
      }),
    );
    const installed = run(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], consumer, 300_000, {
      // Should anything still try NuGet, make it fail at once rather than depend on this machine's network.
      GLOBAL_AGENT_HTTPS_PROXY: 'http://127.0.0.1:9',
    });
    installLog = installed.out;
    assert.equal(
      installed.code,
      0,
      `npm install ${installed.signal ? `killed (${installed.signal}) after 300 s` : 'failed'}:\n${installed.out}`,
    );
  });

  after(async () => {
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it("ships LICENSE, gpu-smoke and the map page's assets, and no source maps or other sources", () => {
    const listing = run('tar', ['tzf', tarball], work, 30_000).out.split('\n');
    assert.ok(listing.includes('package/LICENSE'));
    assert.ok(listing.includes('package/scripts/gpu-smoke'));
    assert.deepEqual(
      listing.filter((f) => f.endsWith('.map')),
      [],
    );
    // The map page's script, style and template are run-time assets read from src/map/page/; no other source ships.
    const sources = listing.filter((f) => f.startsWith('package/src/'));
    assert.deepEqual(
      sources.filter((f) => !f.startsWith('package/src/map/page/')),
      [],
    );
    for (const asset of ['map.html', 'map.js', 'map.css'])
      assert.ok(sources.includes(`package/src/map/page/${asset}`), asset);
  });

  it("installed without running onnxruntime-node's NuGet download", () => {
    assert.doesNotMatch(installLog, /nuget|ENOTFOUND|ECONNREFUSED/i);
    const bin = path.join(consumer, 'node_modules/onnxruntime-node/bin/napi-v6', process.platform, process.arch);
    for (const file of CUDA_PROVIDER_FILES) assert.ok(!existsSync(path.join(bin, file)), file);
  });

  it('npx featcache --help lists install-cuda, and a tiny extract runs on CPU', async () => {
    const help = run(npm, ['exec', '--offline', '--', 'featcache', '--help'], consumer, 60_000);
    assert.equal(help.code, 0, help.out);
    assert.match(help.out, /featcache install-cuda/);
    await fs.writeFile(path.join(consumer, 'tiny.onnx'), tinyModel());
    await writeImageFolder(path.join(consumer, 'data'), { train: { ants: 2, bees: 2 } });
    const extract = run(
      path.join(consumer, 'node_modules/.bin/featcache'),
      ['extract', '--data', 'data', '--model', 'tiny.onnx', '--cache', 'features', '--device', 'cpu', '--json'],
      consumer,
      120_000,
    );
    assert.equal(extract.code, 0, extract.out);
    assert.equal(JSON.parse(extract.out.trim().split('\n').at(-1)!).extracted, 4);
  });

  it(
    'npx featcache install-cuda works from the consumer project (dry run: it finds onnxruntime-node there)',
    { skip: `${process.platform}/${process.arch}` === 'linux/x64' ? false : 'linux/x64 only' },
    () => {
      const r = run(
        path.join(consumer, 'node_modules/.bin/featcache'),
        ['install-cuda', '--dry-run', '--json'],
        consumer,
        60_000,
      );
      assert.equal(r.code, 0, r.out);
      const plan = JSON.parse(r.out.trim().split('\n').at(-1)!);
      assert.equal(plan.status, 'planned');
      assert.equal(plan.installer, path.join(consumer, 'node_modules/onnxruntime-node/script/install.js'));
    },
  );

  it(
    'npx featcache-gpu-smoke runs from the consumer project and, without CUDA here, names what is missing',
    { skip: describeCudaProblems(checkCuda()).length === 0 ? 'CUDA is complete on this machine' : false },
    async () => {
      await fs.writeFile(path.join(consumer, 'tiny.onnx'), tinyModel());
      const r = run(
        path.join(consumer, 'node_modules/.bin/featcache-gpu-smoke'),
        ['--model', 'tiny.onnx', '--batch-size', '2', '--batches', '1'],
        consumer,
        60_000,
      );
      assert.equal(r.code, 1, r.out);
      assert.match(
        r.out,
        /gpu-smoke: onnxruntime 1\.30's CUDA provider needs CUDA 12\.x and cuDNN 9\.x; missing here:/,
      );
      assert.match(
        r.out,
        /libonnxruntime_providers_cuda\.so.* absent from .*consumer\/node_modules\/onnxruntime-node\/.*; run 'npx featcache install-cuda'/,
      );
    },
  );

  // featcache's published types must not reach yargs (TS7016), TensorFlow.js or ONNX protobuf types (their .d.ts
  // files do not compile under a consumer's strict settings): functions that take those are internal.
  it('a consumer .ts file importing featcache compiles with skipLibCheck false', async () => {
    // Node's types only (a consumer of a Node library has them), taken from this repository: nothing else leaks in.
    const typeRoot = path.join(work, 'types');
    await fs.mkdir(typeRoot);
    await fs.symlink(path.join(repoRoot, 'node_modules/@types/node'), path.join(typeRoot, 'node'));
    await fs.writeFile(
      path.join(consumer, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          skipLibCheck: false,
          noEmit: true,
          typeRoots: [typeRoot],
          types: ['node'],
        },
        files: ['use.ts'],
      }),
    );
    await fs.writeFile(
      path.join(consumer, 'use.ts'),
      [
        "import { FeatcacheError, openDataset, installCuda, fetchModel, extract, trainHead, predict, exportSplit, serve, bundle, FeatureCache, DEFAULT_EXTRACT_OPTIONS } from 'featcache';",
        "import type { ExtractResult, TrainHeadResult, PredictResult, HeadInfo } from 'featcache';",
        'const error: FeatcacheError = new FeatcacheError("x");',
        'export async function run(): Promise<[ExtractResult, TrainHeadResult, PredictResult]> {',
        "  const e = await extract({ data: 'd', batchSize: DEFAULT_EXTRACT_OPTIONS.batchSize });",
        "  return [e, await trainHead({ cache: e.cache }), await predict({ inputs: ['x.jpg'] })];",
        '}',
        'export const uses = [error, openDataset, installCuda, fetchModel, exportSplit, serve, bundle, FeatureCache];',
        'export type Info = HeadInfo;',
        '',
      ].join('\n'),
    );
    const tsc = run(
      process.execPath,
      [path.join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', consumer],
      consumer,
      120_000,
    );
    const errors = tsc.out.split('\n').filter((l) => /error TS\d+/.test(l));
    assert.deepEqual(errors, [], "no error anywhere: not in featcache's types, not in what they import");
    assert.equal(tsc.code, 0, tsc.out);
  });
});
