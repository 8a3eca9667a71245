import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { tempDir } from './helpers.js';
import { ensureVenv, requirementLines, systemPython, venvKey } from './python-venv.js';
import { existsSync } from 'node:fs';

const noVenv = (() => {
  if (!existsSync(systemPython)) return `needs ${systemPython}`;
  return false;
})();

describe('test venv helper', () => {
  let dir: string;
  let requirements: string;
  before(async () => {
    dir = await tempDir('featcache-venv-');
    requirements = path.join(dir, 'requirements.txt');
    await fs.writeFile(requirements, '# nothing to install: the venv alone\n');
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  it('keys the venv by the wheel list and interpreter, not by comments or blank lines', () => {
    const a = venvKey('numpy==2.3.5\npandas==3.0.6\n', 'Python 3.11.2');
    assert.equal(venvKey('# pinned\nnumpy==2.3.5   # arrays\n\npandas==3.0.6', 'Python 3.11.2'), a);
    assert.notEqual(venvKey('numpy==2.3.5\npandas==3.0.5\n', 'Python 3.11.2'), a);
    assert.notEqual(venvKey('numpy==2.3.5\npandas==3.0.6\n', 'Python 3.12.0'), a);
    assert.deepEqual(requirementLines('# x\n a==1 # y\n\nb\n'), ['a==1', 'b']);
  });

  it('two callers at once build one venv; the other waits and reuses it', { skip: noVenv }, async () => {
    const root = path.join(dir, 'concurrent');
    const [a, b] = await Promise.all([ensureVenv({ root, requirements }), ensureVenv({ root, requirements })]);
    assert.equal(a.dir, b.dir);
    assert.deepEqual([a.built, b.built].sort(), [false, true]);
    assert.deepEqual(a.failed, []);
    const again = await ensureVenv({ root, requirements });
    assert.equal(again.built, false, 'a later run reuses the venv');
    assert.deepEqual(
      (await fs.readdir(root)).filter((f) => f.endsWith('.lock')),
      [],
      'no lock is left behind',
    );
  });

  it('takes over the lock and the half-built venv of a builder that died', { skip: noVenv }, async () => {
    const root = path.join(dir, 'dead');
    const first = await ensureVenv({ root, requirements });
    // Simulate a builder killed mid-build: no marker, a lock naming a pid that no longer exists.
    await fs.rm(path.join(first.dir, 'featcache-venv.json'));
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((r) => dead.on('close', r));
    await fs.mkdir(`${first.dir}.lock`);
    await fs.writeFile(path.join(`${first.dir}.lock`, 'pid'), String(dead.pid));
    const second = await ensureVenv({ root, requirements });
    assert.equal(second.built, true);
    assert.ok(existsSync(path.join(second.dir, 'featcache-venv.json')));
  });

  it('a wheel pip cannot install is reported by name, and the others still install', { skip: noVenv }, async () => {
    const root = path.join(dir, 'missing');
    const list = path.join(dir, 'missing.txt');
    await fs.writeFile(list, 'featcache-no-such-wheel-xyz==0.0.1\n');
    const v = await ensureVenv({ root, requirements: list });
    assert.equal(v.failed.length, 1);
    assert.match(v.failed[0]!, /^featcache-no-such-wheel-xyz==0\.0\.1 \(/);
  });
});
