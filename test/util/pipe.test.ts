import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const pipeModule = pathToFileURL(
  path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'util', 'pipe.js'),
).href;

/** Runs a script writing 8 MiB to stdout whose reader is already gone (`| head` that has exited). */
function writeToClosedPipe(install: boolean): Promise<{ code: number | null; stderr: string }> {
  const script = `${install ? `(await import(${JSON.stringify(pipeModule)})).exitQuietlyOnBrokenPipe();` : ''}
    const chunk = 'x'.repeat(65536) + '\\n';
    for (let i = 0; i < 128; i++) process.stdout.write(chunk);`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script]);
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('a closed stdout pipe', () => {
  it('without the handler, Node prints an EPIPE stack trace (the set-up really breaks the pipe)', async () => {
    const r = await writeToClosedPipe(false);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /EPIPE/);
  });

  it('with the handler featcache installs, exits 0 and prints nothing', async () => {
    const r = await writeToClosedPipe(true);
    assert.equal(r.code, 0);
    assert.equal(r.stderr, '');
  });
});
