// Mutation testing of the numerical modules: `npm run mutate` (not part of CI; ~20 min on 2 cores).
// `MUTATE=tap,split npm run mutate` mutates a subset. Each mutant runs only the tests of its module
// (scripts/mutate-tests.mjs maps it back), on dist/ built once from the instrumented sources.
import * as path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const root = path.dirname(fileURLToPath(import.meta.url));

/**
 * Module → the compiled tests that should kill its mutants (fast unit tests, not the CLI end-to-end suite), and
 * optionally a `--test-name-pattern` that narrows them to the suites that exercise the module.
 */
export const MODULE_TESTS = {
  tap: { source: 'src/backbone/tap.ts', tests: ['dist/test/backbone/tap.test.js'] },
  preprocess: { source: 'src/image/preprocess.ts', tests: ['dist/test/image/preprocess.test.js'] },
  split: { source: 'src/dataset/split.ts', tests: ['dist/test/dataset/split.test.js'] },
  reader: {
    source: 'src/store/reader.ts',
    tests: ['dist/test/store/reader.test.js', 'dist/test/store/writer.test.js'],
  },
  writer: { source: 'src/store/writer.ts', tests: ['dist/test/store/writer.test.js'] },
  // The head helper owns normalisation's tests; they live in test/store or test/head depending on the merge.
  normalize: { source: 'src/head/normalize.ts', tests: ['dist/test/head/normalize.test.js'] },
  // The default head: the L-BFGS probe (probe.test.js checks it against scikit-learn when python3-sklearn is there).
  lbfgs: { source: 'src/head/probe/lbfgs.ts', tests: ['dist/test/head/probe/lbfgs.test.js'] },
  linalg: { source: 'src/head/probe/linalg.ts', tests: ['dist/test/head/probe/linalg.test.js'] },
  probe: { source: 'src/head/probe/probe.ts', tests: ['dist/test/head/probe/probe.test.js'] },
  probeSelect: { source: 'src/head/probe/select.ts', tests: ['dist/test/head/probe/select.test.js'] },
  metrics: { source: 'src/head/metrics.ts', tests: ['dist/test/head/metrics.test.js'] },
  // The plan and the held-out scores are checked from both selectors: the mini-batch sweep and the probe's.
  plan: {
    source: 'src/head/plan.ts',
    tests: ['dist/test/head/minibatch/select.test.js', 'dist/test/head/probe/select.test.js'],
  },
  select: { source: 'src/head/minibatch/select.ts', tests: ['dist/test/head/minibatch/select.test.js'] },
  bundle: { source: 'src/export/bundle.ts', tests: ['dist/test/export/bundle.test.js'] },
  batcher: { source: 'src/serve/batcher.ts', tests: ['dist/test/serve/batcher.test.js'] },
  // The UrlSource and URL-list suites only: extract/predict from URLs end to end add ~10 s a mutant and reach
  // url.ts through the same prefetch and read paths.
  url: {
    source: 'src/dataset/url.ts',
    tests: ['dist/test/dataset/url.test.js'],
    namePattern: 'UrlSource|openDataset with URLs',
  },
  tar: { source: 'src/dataset/tar.ts', tests: ['dist/test/dataset/tar.test.js'] },
};

/** The modules this run mutates (all, or MUTATE=name,name). */
export const chosen = (process.env.MUTATE ?? Object.keys(MODULE_TESTS).join(','))
  .split(',')
  .map((name) => name.trim())
  .filter(Boolean);
for (const name of chosen) {
  if (!(name in MODULE_TESTS))
    throw new Error(`MUTATE: expected names from ${Object.keys(MODULE_TESTS).join(', ')}, got "${name}"`);
}

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  mutate: chosen.map((name) => MODULE_TESTS[name].source),
  testRunner: 'command',
  // The sandbox is not beside ../shared: point the tests at it, so the MobileNet and ResNet checks run.
  commandRunner: { command: `FEATCACHE_SHARED_DIR='${path.resolve(root, '../shared')}' node scripts/mutate-tests.mjs` },
  coverageAnalysis: 'off',
  // The resize's WebAssembly too, or mutants of image/ would run the JavaScript fallback.
  buildCommand: 'npx tsc -p . && npm run build:wasm',
  ignorePatterns: ['dist', 'features', 'models', 'data', '.scratch', 'reports'],
  concurrency: 2,
  // Mutants that loop forever are stopped by scripts/mutate-tests.mjs first (per-module limit).
  timeoutMS: 60_000,
  timeoutFactor: 1,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  thresholds: { high: 90, low: 80, break: null },
  tempDirName: '.stryker-tmp',
};
