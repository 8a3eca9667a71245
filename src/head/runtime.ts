/**
 * TensorFlow.js runtime selection, an ordered fallback like the backbone's: tfjs-node (native libtensorflow, what
 * users get from `npm install`), then the portable wasm backend, then plain JS. Every skipped backend's reason is
 * kept, printed and recorded with the head.
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type * as TF from '@tensorflow/tfjs';
import { parseChoice, FeatcacheError, optionName, errorMessage, ExitCode } from '../errors.js';

/** @internal */
export type Tf = typeof TF;
export const BACKENDS = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKENDS)[number];

/** @internal */
export interface TfRuntime {
  tf: Tf;
  backend: string;
  /** Why faster backends were not used, e.g. "tensorflow: @tensorflow/tfjs-node is not installed". */
  skipped: string[];
}

// tfjs ships CommonJS: require() loads it in 0.2–0.5 s, where import() first has cjs-module-lexer scan every file
// for named exports and took 0.8–1.5 s (2-core machine, loaded) — most of a one-image predict.
const require = createRequire(import.meta.url);
let cached: Promise<TfRuntime> | null = null;

async function tryNode(): Promise<Tf> {
  // tfjs-node registers the 'tensorflow' backend and re-exports the same tfjs API.
  const name = '@tensorflow/tfjs-node';
  return require(name) as Tf;
}

async function tryWasm(tf: Tf): Promise<void> {
  const wasm = require('@tensorflow/tfjs-backend-wasm') as typeof import('@tensorflow/tfjs-backend-wasm');
  const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
  wasm.setWasmPaths(`${dist}${path.sep}`);
  if (!(await tf.setBackend('wasm'))) throw new Error('wasm backend failed to initialise');
}

/** @internal */
export function loadTf(choice: BackendChoice = 'auto'): Promise<TfRuntime> {
  parseChoice('backend', choice, BACKENDS);
  cached ??= selectBackend(choice);
  return cached;
}

async function selectBackend(choice: BackendChoice): Promise<TfRuntime> {
  const skipped: string[] = [];
  if (choice === 'auto' || choice === 'tensorflow') {
    try {
      const tf = await tryNode();
      await tf.setBackend('tensorflow');
      await tf.ready();
      return { tf, backend: 'tensorflow', skipped };
    } catch (error) {
      const message = errorMessage(error);
      const reason = /Cannot find (module|package)/.test(message)
        ? '@tensorflow/tfjs-node is not installed (npm install @tensorflow/tfjs-node, where libtensorflow can be downloaded)'
        : `@tensorflow/tfjs-node failed to load: ${message}`;
      if (choice === 'tensorflow')
        throw new FeatcacheError(`${optionName('backend')} tensorflow: ${reason}`, ExitCode.failed);
      skipped.push(`tensorflow: ${reason}`);
    }
  }
  const tf = require('@tensorflow/tfjs') as Tf;
  // tfjs prints a banner recommending tfjs-node whenever its cpu backend starts in Node; we report that ourselves.
  tf.env().set('IS_TEST', true);
  if (choice === 'auto' || choice === 'wasm') {
    try {
      await tryWasm(tf);
      await tf.ready();
      return { tf, backend: 'wasm', skipped };
    } catch (error) {
      if (choice === 'wasm')
        throw new FeatcacheError(`${optionName('backend')} wasm: ${errorMessage(error)}`, ExitCode.failed);
      skipped.push(`wasm: ${errorMessage(error)}`);
    }
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return { tf, backend: 'cpu', skipped };
}
