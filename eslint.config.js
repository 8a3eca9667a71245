// ESLint: typescript-eslint's type-aware recommended rules over src, test and scripts. Formatting is Prettier's job.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // src/image/simd is AssemblyScript (asc compiles it to WebAssembly): its types (usize, v128) are not TypeScript's.
  { ignores: ['dist/', 'node_modules/', 'reports/', '.stryker-tmp/', 'features/', 'models/', 'src/image/simd/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // node:test's test()/describe() return promises that the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Off: an async function that never awaits still turns a throw into a rejection, which async contracts
      // (sources, sinks, fastify routes, test fakes) rely on; dropping `async` would make those throws synchronous.
      '@typescript-eslint/require-await': 'off',
      // A caught value passed on as a rejection is whatever was thrown; wrapping it would change what callers see.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      '@typescript-eslint/only-throw-error': ['error', { allowThrowingUnknown: true }],
    },
  },
  {
    // Tests and benchmarks parse the JSON that commands print and assert on its fields; typing every such object
    // would restate the schema the assertions already check.
    files: ['test/**/*.ts', 'scripts/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  { files: ['**/*.mjs', '**/*.js'], ...tseslint.configs.disableTypeChecked },
  {
    // Plain-JS tooling (Stryker's config and runner, scripts/*.mjs) runs on Node.
    files: ['**/*.mjs', '**/*.js'],
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly' },
    },
  },
  {
    // The map page's script runs in a browser, inlined into the page featcache writes; it has no Node globals.
    files: ['src/map/page/**/*.js'],
    languageOptions: {
      sourceType: 'script',
      globals: Object.fromEntries(
        [
          'window',
          'document',
          'performance',
          'requestAnimationFrame',
          'setTimeout',
          'clearTimeout',
          'atob',
          'Blob',
          'URL',
          'Image',
          'HTMLInputElement',
        ].map((name) => [name, 'readonly']),
      ),
    },
  },
);
