/**
 * One writer per (cache, split, shard). The lock file holds the owner's pid and host; a lock whose process is gone
 * (killed with -9) is taken over at once, so a resumed run never waits on a dead owner.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { FeatcacheError } from '../errors.js';

export interface Lock {
  release(): Promise<void>;
}

/** Whether a process of this host is alive (EPERM: alive, but not ours). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function acquireLock(file: string, what: string): Promise<Lock> {
  const owner = { pid: process.pid, host: os.hostname(), since: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await fs.writeFile(file, JSON.stringify(owner), { flag: 'wx' });
      return { release: () => fs.rm(file, { force: true }) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const held = await fs.readFile(file, 'utf8').then((t) => JSON.parse(t) as typeof owner).catch(() => null);
    if (held && held.host === owner.host && !processAlive(held.pid)) {
      await fs.rm(file, { force: true });
      continue;
    }
    if (held && held.host !== owner.host) {
      throw new FeatcacheError(`${what}: locked by pid ${held.pid} on ${held.host} since ${held.since}; if that job is dead, delete ${file}`, 1);
    }
    if (held) {
      throw new FeatcacheError(`${what}: another featcache process (pid ${held.pid}, since ${held.since}) is writing it; wait for it to finish or use another --shard`, 1);
    }
  }
  throw new FeatcacheError(`${what}: could not take the lock ${file}`, 1);
}

/**
 * Removes what a writer killed mid-commit leaves: temporary files (`.<name>.<pid>.<time>.tmp`) of dead processes,
 * and part indexes whose part was never renamed into place. Call it holding the lock.
 */
export async function removeStaleTemporaries(dir: string, shard: string): Promise<void> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const present = new Set(names);
  for (const name of names) {
    const pid = /^\.part-.*\.(\d+)\.\d+\.tmp$/.exec(name)?.[1];
    // Another shard's writer may be between writing its index and renaming its part: only this shard's are ours.
    const orphanIndex = name.startsWith('part-') && name.includes(`-${shard}-`) && name.endsWith('.index.json') &&
      !present.has(name.replace(/\.index\.json$/, '.arrow'));
    if ((pid && !processAlive(Number(pid))) || orphanIndex) await fs.rm(path.join(dir, name), { force: true });
  }
}
