/**
 * onnxruntime 1.30's telemetry is off in featcache's processes unless the user asks for it: no
 * `/tmp/mat-debug-<pid>.log` (nor the device id and event cache that come with it) from an extract.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { cliPath, repoRoot, tempDir, writeColourFolder, writeTinyModel } from '../support/helpers.js';

const ortModule = path.join(repoRoot, 'dist/src/onnx/ort.js');
const debugLog = (pid: number | undefined) => `/tmp/mat-debug-${pid}.log`;

function envWithout(name: string, value?: string): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env[name];
  return value === undefined ? env : { ...env, [name]: value };
}

function node(args: string[], env: NodeJS.ProcessEnv) {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', env });
  assert.equal(r.status, 0, r.stderr);
  return r;
}

describe("onnxruntime's telemetry", () => {
  it('is opted out before onnxruntime loads, and a value the user set is kept', () => {
    const printed = (env: NodeJS.ProcessEnv) =>
      node(
        [
          '--input-type=module',
          '-e',
          `await import(${JSON.stringify(ortModule)}); console.log(process.env.ORT_DISABLE_TELEMETRY)`,
        ],
        env,
      ).stdout.trim();
    assert.equal(printed(envWithout('ORT_DISABLE_TELEMETRY')), '1');
    assert.equal(printed(envWithout('ORT_DISABLE_TELEMETRY', '0')), '0');
  });

  it('an extract leaves no telemetry log; plain onnxruntime-node here would have written one', async () => {
    const dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    await writeColourFolder(path.join(dir, 'data'), 2);
    const session = `const ort = await import('onnxruntime-node'); await ort.InferenceSession.create(${JSON.stringify(model)});`;
    const plain = node(['--input-type=module', '-e', session], envWithout('ORT_DISABLE_TELEMETRY'));
    const plainWrote = fs.existsSync(debugLog(plain.pid));
    if (plainWrote) fs.rmSync(debugLog(plain.pid)); // this test's own onnxruntime made it
    const extract = node(
      [cliPath, 'extract', '--data', path.join(dir, 'data'), '--model', model, '--cache', path.join(dir, 'features')],
      envWithout('ORT_DISABLE_TELEMETRY'),
    );
    assert.match(extract.stdout + extract.stderr, /extracted/);
    assert.equal(fs.existsSync(debugLog(extract.pid)), false, `featcache left ${debugLog(extract.pid)}`);
    if (!plainWrote) console.log('# this onnxruntime build writes no telemetry log even without the opt-out');
  });
});
