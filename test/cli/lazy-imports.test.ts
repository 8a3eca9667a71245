/**
 * What a command loads. `--version` loads neither yargs nor any command file; `--help` and `<cmd> --help` do not
 * pay for onnxruntime, Arrow, Parquet, sharp, HTTP or TensorFlow.js, nor for other commands' files; a command loads only the modules its job uses; importing the library loads no job. The check is
 * the module list a preload hook records in a child process, not a timing.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { cliPath, repoRoot, runCli, tempDir, writeColourFolder, writeTinyModel } from '../support/helpers.js';

const recorder = path.join(repoRoot, 'dist/test/support/record-loads.js');

/** Heavy or network packages, by the name a resolved path shows under node_modules. */
const HEAVY = [
  'onnxruntime-node',
  'onnx-proto',
  'apache-arrow',
  'parquet-wasm',
  'sharp',
  'fastify',
  '@fastify',
  'undici',
  '@tensorflow',
  'adm-zip',
  'tar-stream',
];

function packagesIn(lines: string[]): Set<string> {
  const names = new Set<string>();
  for (const line of lines) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(line);
    if (m) names.add(m[1]!);
  }
  return names;
}

async function loadedPackages(args: string[]): Promise<{ packages: Set<string>; modules: string[]; status: number }> {
  const dir = await tempDir('featcache-loads-');
  const file = path.join(dir, 'loads.txt');
  const r = spawnSync(process.execPath, ['--import', recorder, ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, FEATCACHE_LOADS_FILE: file },
  });
  const lines = (await fs.readFile(file, 'utf8')).split('\n').filter(Boolean);
  await fs.rm(dir, { recursive: true, force: true });
  return { packages: packagesIn(lines), modules: lines, status: r.status ?? -1 };
}

/** The command files (src/cli/<cmd>.js) among the loaded modules, by command name. */
function commandFilesIn(modules: string[]): string[] {
  const files = modules.map((m) => /dist\/src\/cli\/([\w-]+)\.js$/.exec(m)?.[1]);
  const helpers = new Set(['registry', 'command-text', 'flags', 'summary']);
  return [...new Set(files.filter((f): f is string => f !== undefined && !helpers.has(f)))].sort();
}

function heavyIn(packages: Set<string>): string[] {
  return HEAVY.filter((h) => [...packages].some((p) => p === h || p.startsWith(`${h}/`)));
}

describe('lazy loading', () => {
  it('the recorder sees a heavy module when one is loaded (the check can fail)', async () => {
    const r = await loadedPackages(['--input-type=module', '-e', "await import('onnxruntime-node')"]);
    assert.deepEqual(heavyIn(r.packages), ['onnxruntime-node']);
  });

  for (const args of [['--version'], ['-v']]) {
    it(`featcache ${args.join(' ')} answers from package.json alone: no yargs, no command file`, async () => {
      const r = await loadedPackages([cliPath, ...args]);
      assert.equal(r.status, 0);
      assert.ok(
        r.modules.some((m) => m.endsWith('dist/src/version.js')),
        'the recorder saw version.js',
      );
      assert.deepEqual([...r.packages], []);
      assert.deepEqual(commandFilesIn(r.modules), []);
    });
  }

  // Each run loads the command file it names (for its flags), and no other.
  for (const [args, files] of [
    [['--help'], []],
    [['-h'], []],
    [['frobnicate'], []],
    [['predict', '--help'], ['predict']],
    [['extract', '--help'], ['extract']],
    [['--debug', 'serve', '--help'], ['serve']],
  ] as const) {
    it(`featcache ${args.join(' ')} loads ${files.length ? `cli/${files[0]}.js and` : 'no command file and'} no ML, Arrow, Parquet, image or HTTP module`, async () => {
      const r = await loadedPackages([cliPath, ...args]);
      assert.equal(r.status, args[0] === 'frobnicate' ? 2 : 0);
      assert.ok(r.packages.has('yargs'), 'the recorder saw yargs');
      assert.deepEqual(heavyIn(r.packages), []);
      assert.ok(!r.modules.some((m) => /dist\/src\/jobs\/(?!defaults|setting-text)/.test(m)), 'no job module');
      assert.deepEqual(commandFilesIn(r.modules), files);
    });
  }

  it('a flag before the command that may take a value loads every command file, as yargs may read on past it', async () => {
    const r = await loadedPackages([cliPath, '--cache', 'x', 'extract', '--help']);
    assert.equal(r.status, 0);
    assert.ok(commandFilesIn(r.modules).length > 10);
    assert.deepEqual(heavyIn(r.packages), []);
  });

  it('importing the predict job loads no heavy module: each loads when a prediction first needs it', async () => {
    const r = await loadedPackages(['--input-type=module', '-e', "await import('./dist/src/jobs/predict.js')"]);
    assert.equal(r.status, 0);
    assert.deepEqual(heavyIn(r.packages), []);
  });

  it('one-image predict loads onnxruntime, sharp and TensorFlow.js, and nothing a local image does not need', async () => {
    const dir = await tempDir('featcache-lazy-predict-');
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 2);
    const cache = path.join(dir, 'cache');
    const head = path.join(dir, 'head');
    const extracted = await runCli(['extract', '--data', path.join(dir, 'data'), '--model', model, '--cache', cache]);
    assert.equal(extracted.code, 0, extracted.stderr);
    const trained = await runCli(['train-head', '--cache', cache, '--head', head, '--epochs', '2']);
    assert.equal(trained.code, 0, trained.stderr);
    const image = path.join(dir, 'data', 'train', 'red', 'red0.png');
    const args = [cliPath, 'predict', image, '--head', head, '--device', 'cpu'];
    // The first predict taps the graph by the head's tensor name; later ones (a shell loop) find it in the model cache.
    assert.equal((await loadedPackages(args)).status, 0);
    const r = await loadedPackages(args);
    assert.equal(r.status, 0);
    const heavy = heavyIn(r.packages);
    for (const used of ['onnxruntime-node', 'sharp', '@tensorflow']) assert.ok(heavy.includes(used), used);
    // URL fetching, globbing, tap surgery (protobuf: the tapped graph comes from the model cache), Arrow, Parquet, HTTP.
    for (const unused of ['apache-arrow', 'parquet-wasm', 'fastify', 'undici', 'onnx-proto', 'tar-stream', 'adm-zip'])
      assert.ok(!heavy.includes(unused), unused);
    for (const unused of ['fast-glob', 'protobufjs']) assert.ok(!r.packages.has(unused), unused);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('extract of a folder, int8 with its model saved, loads no URL, tar, CSV or protobuf code', async () => {
    const dir = await tempDir('featcache-lazy-extract-');
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 2);
    const args = (cache: string) => [
      cliPath,
      'extract',
      '--data',
      path.join(dir, 'data'),
      '--model',
      model,
      '--cache',
      path.join(dir, cache),
    ];
    // The first run taps the graph, quantises and calibrates (protobuf); a fresh cache later reuses all of it.
    assert.equal((await loadedPackages([...args('first'), '--int8'])).status, 0);
    const r = await loadedPackages([...args('second'), '--int8']);
    assert.equal(r.status, 0);
    const heavy = heavyIn(r.packages);
    for (const used of ['onnxruntime-node', 'sharp', 'apache-arrow']) assert.ok(heavy.includes(used), used);
    for (const unused of ['undici', 'tar-stream', 'onnx-proto', 'fastify', '@tensorflow', 'parquet-wasm'])
      assert.ok(!heavy.includes(unused), unused);
    for (const unused of ['csv-parse', 'braces', 'protobufjs']) assert.ok(!r.packages.has(unused), unused);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('importing the library loads no job and no heavy module, Arrow included', async () => {
    const r = await loadedPackages([
      '--input-type=module',
      '-e',
      "const f = await import('./dist/src/index.js'); f.parseDevice('cpu');",
    ]);
    assert.equal(r.status, 0);
    assert.deepEqual(heavyIn(r.packages), []);
    assert.ok(!r.modules.some((m) => /dist\/src\/jobs\/(?!defaults|setting-text)/.test(m)), 'no job module');
  });

  it('FeatureCache loads Arrow with the first part it reads, not when it opens a cache', async () => {
    const dir = await tempDir('featcache-lazy-cache-');
    await fs.writeFile(
      path.join(dir, 'cache.json'),
      JSON.stringify({
        format: 1,
        modelSha256: 'a'.repeat(64),
        modelFile: 'm.onnx',
        tappedTensor: 't',
        preset: {},
        exif: 'ignore',
        icc: 'ignore',
        dim: 2,
        classes: [],
      }),
    );
    const opened = await loadedPackages([
      '--input-type=module',
      '-e',
      `const f = await import('./dist/src/index.js'); const c = await f.FeatureCache.open(${JSON.stringify(dir)}); await c.splits();`,
    ]);
    assert.equal(opened.status, 0);
    assert.deepEqual(heavyIn(opened.packages), []);
    const read = await loadedPackages([
      '--input-type=module',
      '-e',
      `const f = await import('./dist/src/index.js'); const c = await f.FeatureCache.open(${JSON.stringify(dir)});
       await c.read('train').catch(() => {});
       const { readPart } = await import('./dist/src/store/part.js'); await readPart('/nonexistent').catch(() => {});`,
    ]);
    assert.equal(read.status, 0);
    assert.deepEqual(heavyIn(read.packages), ['apache-arrow']);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("a library job's first call loads its module; defaults are the job's own", () => {
    const r = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const f = await import('./dist/src/index.js');
         const j = await import('./dist/src/jobs/extract.js');
         const c = await f.info({ cache: 'no-such-cache-dir' }).catch((e) => e.message);
         console.log(JSON.stringify({ same: f.DEFAULT_EXTRACT_OPTIONS === j.DEFAULT_EXTRACT_OPTIONS, c }));`,
      ],
      { cwd: repoRoot, encoding: 'utf8' },
    );
    const out = JSON.parse(r.stdout) as { same: boolean; c: string };
    assert.equal(out.same, true);
    assert.match(out.c, /no-such-cache-dir/);
  });
});
