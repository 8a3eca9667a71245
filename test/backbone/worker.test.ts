import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { openBackbone } from '../../src/backbone/index.js';
import { sessionStackMb } from '../../src/backbone/session.js';
import { repoRoot, tempDir, writeTinyModel } from '../support/helpers.js';

/** Runs a node script with `padding` bytes of extra command line, as `featcache predict $(cat list.txt)` would. */
async function runWithLongCommandLine(
  script: string,
  padding: number,
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const file = path.join(await tempDir(), 'script.mjs');
  await fs.writeFile(file, script);
  const filler = Array.from(
    { length: Math.ceil(padding / 100) },
    (_, i) => `/a/long/path/to/an/image/in/a/dataset/folder/with/many/levels/image-${String(i).padStart(8, '0')}.jpg`,
  );
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file, ...filler], { cwd: repoRoot });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

describe('backbone worker', () => {
  it('runs the tapped model in a worker and returns features per image, batch after batch', async () => {
    const model = await writeTinyModel(path.join(await tempDir(), 'tiny.onnx'));
    const backbone = await openBackbone(model, { device: { kind: 'cpu' }, threads: 1 });
    try {
      const size = backbone.input.height ?? 32;
      const one = new Float32Array(3 * size * size).fill(0.5);
      const two = new Float32Array(2 * 3 * size * size);
      two.set(one, 0);
      two.fill(-0.25, 3 * size * size);
      const single = await backbone.extract(one.slice(), 1, size);
      const pair = await backbone.extract(two, 2, size);
      assert.equal(single.length, backbone.dim);
      assert.equal(pair.length, 2 * backbone.dim);
      assert.deepEqual(
        Array.from(pair.subarray(0, backbone.dim)),
        Array.from(single),
        'the same image gives the same features in another batch',
      );
      assert.notDeepEqual(
        Array.from(pair.subarray(backbone.dim)),
        Array.from(single),
        'another image gives other features',
      );
    } finally {
      await backbone.close();
    }
  });

  it('sizes the session stack from the command line', () => {
    assert.equal(sessionStackMb(100), 9);
    assert.ok(sessionStackMb(2 * 2 ** 20) >= 512, 'a 2 MiB command line (Linux ARG_MAX) gets room');
  });

  it('opens a session under a 200 KB command line (it segfaulted with the default worker stack)', async () => {
    const model = await writeTinyModel(path.join(await tempDir(), 'tiny.onnx'));
    const script = `
      import { openBackbone } from ${JSON.stringify(path.join(repoRoot, 'dist/src/backbone/index.js'))};
      const b = await openBackbone(${JSON.stringify(model)}, { device: { kind: 'cpu' }, threads: 1 });
      const size = b.input.height ?? 32;
      const f = await b.extract(new Float32Array(3 * size * size), 1, size);
      await b.close();
      console.log('features', f.length);`;
    const r = await runWithLongCommandLine(script, 200_000);
    assert.equal(r.signal, null, `crashed with ${r.signal}: ${r.stderr}`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^features \d+/);
  });
});
