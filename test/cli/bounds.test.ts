import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runCli } from '../support/helpers.js';

/** Values past what the native code can take are refused up front (exit 2, naming the flag), never aborted on. */
describe('numeric flags beyond what the runtime can take', () => {
  const cases: [string[], RegExp][] = [
    [
      ['extract', '--data', 'nowhere', '--model', 'none.onnx', '--threads', '100000'],
      /--threads: expected an integer in \[0, 1024\]/,
    ],
    [
      ['extract', '--data', 'nowhere', '--model', 'none.onnx', '--threads', '1e99'],
      /--threads: expected an integer in \[0, 1024\]/,
    ],
    [
      ['predict', 'nowhere.jpg', '--head', 'nohead', '--threads', '100000'],
      /--threads: expected an integer in \[0, 1024\]/,
    ],
    [['serve', '--head', 'nohead', '--threads', '1e99'], /--threads: expected an integer in \[0, 1024\]/],
    [
      ['extract', '--data', 'nowhere', '--model', 'none.onnx', '--max-pixels', '1e99'],
      /--max-pixels: expected an integer in \[1, 4294836225\]/,
    ],
    [['serve', '--head', 'nohead', '--max-pixels', '1e99'], /--max-pixels: expected an integer in \[1, 4294836225\]/],
    [['train-head', '--cache', 'nowhere', '--hidden', '1e9'], /--hidden: expected an integer in \[0, 65536\]/],
  ];
  for (const [args, message] of cases) {
    it(`featcache ${args.join(' ')} exits 2 naming the flag`, async () => {
      const r = await runCli(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /--device/);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    });
  }
});
