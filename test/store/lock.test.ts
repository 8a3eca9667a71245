import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { spawnSync } from 'node:child_process';
import { acquireLock, processStartTicks, removeStaleTemporaries } from '../../src/store/lock.js';
import { tempDir } from '../support/helpers.js';

const ago = (seconds: number) => new Date(Date.now() - seconds * 1000);

async function lockFile(content: string, ageS = 0): Promise<string> {
  const file = path.join(await tempDir(), '.lock-0of1');
  await fs.writeFile(file, content);
  await fs.utimes(file, ago(ageS), ago(ageS));
  return file;
}

const otherHostLock = JSON.stringify({
  pid: 4242,
  host: 'node-that-died.cluster',
  startTicks: 1,
  since: '2026-01-01T00:00:00Z',
  tool: 'featcache',
});

describe('lock', () => {
  afterEach(() => {
    delete process.env.FEATCACHE_LOCK_STALE_S;
  });

  it('refuses a second writer while the first holds the lock, naming the lock file', async () => {
    const file = path.join(await tempDir(), '.lock-0of1');
    const held = await acquireLock(file, 'cache c split train');
    await assert.rejects(acquireLock(file, 'cache c split train'), (e: Error) => {
      assert.match(
        e.message,
        /^cache c split train: another featcache process \(pid \d+, since .*\) is writing it \(lock .*\.lock-0of1\)/,
      );
      return true;
    });
    await held.release();
    await fs.access(file).then(
      () => assert.fail('released lock still on disk'),
      () => {},
    );
    const again = await acquireLock(file, 'cache c split train');
    await again.release();
  });

  it('takes over a lock whose pid now belongs to an unrelated live process (start time differs)', async () => {
    const ticks = processStartTicks(1);
    assert.notEqual(ticks, null, '/proc is readable here');
    const file = await lockFile(
      JSON.stringify({ pid: 1, host: os.hostname(), startTicks: ticks! + 12345, since: 'then', tool: 'featcache' }),
    );
    const lock = await acquireLock(file, 'w');
    const owner = JSON.parse(await fs.readFile(file, 'utf8'));
    assert.equal(owner.pid, process.pid);
    assert.equal(owner.startTicks, processStartTicks(process.pid));
    await lock.release();
  });

  it('takes over an old-format lock (no start time) whose live pid is not a node process', async () => {
    const file = await lockFile(JSON.stringify({ pid: 1, host: os.hostname(), since: 'then' }));
    const lock = await acquireLock(file, 'w');
    await lock.release();
  });

  it('refuses a fresh lock from another host, and takes it over once its heartbeat is stale', async () => {
    const fresh = await lockFile(otherHostLock, 5);
    await assert.rejects(
      acquireLock(fresh, 'w'),
      /locked by pid 4242 on node-that-died\.cluster .* taken over after 60 s without a heartbeat, or if no featcache job is writing it, delete .*\.lock-0of1/,
    );
    const stale = await lockFile(otherHostLock, 61);
    const lock = await acquireLock(stale, 'w');
    assert.equal(JSON.parse(await fs.readFile(stale, 'utf8')).host, os.hostname());
    await lock.release();
  });

  it('refuses a fresh empty or garbage lock with the remedy, and takes over an old one', async () => {
    for (const garbage of ['', 'not json {', '{"pid":"x"}']) {
      const fresh = await lockFile(garbage, 1);
      await assert.rejects(acquireLock(fresh, 'w'), (e: Error) => {
        assert.match(
          e.message,
          /^w: the lock file .*\.lock-0of1 is empty or not a featcache lock .*; if no featcache job is writing it, delete .*\.lock-0of1$/,
        );
        return true;
      });
      const old = await lockFile(garbage, 120);
      await (await acquireLock(old, 'w')).release();
    }
  });

  it('refreshes its heartbeat while held, so other hosts do not take it over', async () => {
    process.env.FEATCACHE_LOCK_STALE_S = '0.6';
    const file = path.join(await tempDir(), '.lock-0of1');
    const lock = await acquireLock(file, 'w');
    await fs.utimes(file, ago(100), ago(100));
    await new Promise((r) => setTimeout(r, 300));
    const age = Date.now() - (await fs.stat(file)).mtimeMs;
    assert.ok(age < 1000, `heartbeat refreshed the lock (age ${age} ms)`);
    await lock.release();
  });

  it('release leaves a lock that another writer has taken since', async () => {
    const file = path.join(await tempDir(), '.lock-0of1');
    const lock = await acquireLock(file, 'w');
    await fs.writeFile(file, otherHostLock);
    await lock.release();
    assert.equal(JSON.parse(await fs.readFile(file, 'utf8')).host, 'node-that-died.cluster');
  });

  it("a dead writer's lock temporary is swept; a live one's and a user's look-alike are kept", async () => {
    // A kill between writing the lock's temporary and linking it leaves `..lock-<shard>.<pid>.<ms>.tmp` behind.
    const dir = await tempDir();
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const names = [
      `..lock-0of1.${dead}.1.tmp`,
      `..lock-0of1.${process.pid}.1.tmp`,
      `.notes.${dead}.1.tmp`,
      'my-lock-0of1.tmp',
    ];
    for (const name of names) await fs.writeFile(path.join(dir, name), '{}');
    await removeStaleTemporaries(dir, '0of1');
    assert.deepEqual((await fs.readdir(dir)).sort(), names.slice(1).sort());
  });
});
