/**
 * One writer per (cache, split, shard). The lock file names its owner (pid, the process's start time, host) and its
 * mtime is a heartbeat the owner refreshes while it writes. That tells three cases apart without a person:
 * - the owner on this host is gone, or the pid now belongs to another process (its start time differs): taken over
 *   at once, so a resumed run never waits on a dead owner;
 * - the owner is on another host (a shared filesystem, a SLURM re-run on another node): taken over once the
 *   heartbeat is older than the stale timeout, since a dead node cannot refresh it;
 * - the file is empty or not a lock: taken over once it is older than the stale timeout (a live writer's lock is
 *   never empty: it is created whole with link()).
 * Every refusal names the lock file and what to do.
 */
import { readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { FeatcacheError, ExitCode } from '../errors.js';
import { processAlive, removeDeadTemporaries, temporarySibling } from '../util/fsx.js';

export interface Lock {
  release(): Promise<void>;
}

interface Owner {
  pid: number;
  host: string;
  /** The owner's start time in clock ticks since boot (/proc/PID/stat), so a reused pid is not mistaken for it. */
  startTicks: number | null;
  since: string;
  tool: 'featcache';
}

/** Seconds between heartbeats, and the age after which a lock without a heartbeat is stale (FEATCACHE_LOCK_STALE_S). */
export const LOCK_HEARTBEAT_S = 10;
export const DEFAULT_LOCK_STALE_S = 60;

function staleAfterMs(): number {
  const configured = Number(process.env.FEATCACHE_LOCK_STALE_S);
  return (Number.isFinite(configured) && configured > 0 ? configured : DEFAULT_LOCK_STALE_S) * 1000;
}

/** A process's start time (field 22 of /proc/PID/stat); null where /proc is not available. */
export function processStartTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]);
    return Number.isFinite(ticks) ? ticks : null;
  } catch {
    return null;
  }
}

function commandLineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** Whether the owner recorded in a lock of this host is still the running process that wrote it. */
function ownerAlive(owner: Owner): boolean {
  if (!processAlive(owner.pid)) return false;
  const ticks = processStartTicks(owner.pid);
  if (owner.startTicks !== null && ticks !== null) return ticks === owner.startTicks;
  // A lock written by an older featcache has no start time: a node process is assumed to be its writer.
  return /node|featcache/.test(commandLineOf(owner.pid)) || ticks === null;
}

function parseOwner(text: string): Owner | null {
  try {
    const o = JSON.parse(text) as Partial<Owner>;
    if (!Number.isInteger(o.pid) || typeof o.host !== 'string') return null;
    return {
      pid: o.pid!,
      host: o.host,
      startTicks: typeof o.startTicks === 'number' ? o.startTicks : null,
      since: String(o.since ?? '?'),
      tool: 'featcache',
    };
  } catch {
    return null;
  }
}

/** Creates the lock file whole, or fails with EEXIST: link() never exposes a half-written lock. */
async function createWhole(file: string, owner: Owner): Promise<boolean> {
  const tmp = temporarySibling(file);
  await fs.writeFile(tmp, JSON.stringify(owner));
  try {
    await fs.link(tmp, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

type Verdict = { stale: true; why: string } | { stale: false; refusal: string };

function judge(file: string, text: string, ageMs: number, what: string): Verdict {
  const owner = parseOwner(text);
  const staleMs = staleAfterMs();
  const remedy = `if no featcache job is writing it, delete ${file}`;
  if (!owner) {
    if (ageMs > staleMs) return { stale: true, why: 'unreadable and old' };
    return {
      stale: false,
      refusal: `${what}: the lock file ${file} is empty or not a featcache lock (written ${Math.round(ageMs / 1000)} s ago); ${remedy}`,
    };
  }
  if (owner.host === os.hostname()) {
    if (!ownerAlive(owner)) return { stale: true, why: `pid ${owner.pid} is gone` };
    return {
      stale: false,
      refusal: `${what}: another featcache process (pid ${owner.pid}, since ${owner.since}) is writing it (lock ${file}); wait for it to finish or use another --shard`,
    };
  }
  if (ageMs > staleMs) return { stale: true, why: `no heartbeat from ${owner.host} for ${Math.round(ageMs / 1000)} s` };
  return {
    stale: false,
    refusal:
      `${what}: locked by pid ${owner.pid} on ${owner.host} since ${owner.since} (heartbeat ${Math.round(ageMs / 1000)} s ago, lock ${file}); ` +
      `it is taken over after ${staleMs / 1000} s without a heartbeat, or ${remedy}`,
  };
}

/** Removes a stale lock, unless another process replaced it since we looked (same inode, or leave it). */
async function removeIfSame(file: string, inode: number): Promise<void> {
  const now = await fs.stat(file).catch(() => null);
  if (now && now.ino === inode) await fs.rm(file, { force: true });
}

function heartbeat(file: string): NodeJS.Timeout {
  const timer = setInterval(
    () => {
      const now = new Date();
      fs.utimes(file, now, now).catch(() => {});
    },
    Math.min(LOCK_HEARTBEAT_S * 1000, staleAfterMs() / 6),
  );
  timer.unref();
  return timer;
}

export async function acquireLock(file: string, what: string): Promise<Lock> {
  const owner: Owner = {
    pid: process.pid,
    host: os.hostname(),
    startTicks: processStartTicks(process.pid),
    since: new Date().toISOString(),
    tool: 'featcache',
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await createWhole(file, owner)) return heldLock(file, owner);
    const stat = await fs.stat(file).catch(() => null);
    if (!stat) continue;
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    const verdict = judge(file, text, Date.now() - stat.mtimeMs, what);
    if (!verdict.stale) throw new FeatcacheError(verdict.refusal, ExitCode.failed);
    await removeIfSame(file, stat.ino);
  }
  throw new FeatcacheError(
    `${what}: could not take the lock ${file}: other writers keep taking it; wait for them, or delete ${file} if none is running`,
    ExitCode.failed,
  );
}

function heldLock(file: string, owner: Owner): Lock {
  const timer = heartbeat(file);
  return {
    async release() {
      clearInterval(timer);
      const held = parseOwner(await fs.readFile(file, 'utf8').catch(() => ''));
      if (held && held.pid === owner.pid && held.host === owner.host) await fs.rm(file, { force: true });
    },
  };
}

/**
 * Removes what a writer or compaction killed mid-commit leaves: part and lock temporaries of dead processes (a kill
 * between writing a lock's temporary and linking it leaves one), and part indexes whose part was never renamed into
 * place. Call it holding the lock. `shard`: only that shard's orphan indexes,
 * because another shard's writer may be between writing its index and renaming its part; null (compaction, which
 * holds every shard's lock): all of them.
 */
export async function removeStaleTemporaries(dir: string, shard: string | null): Promise<void> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  await removeDeadTemporaries(dir, names, (of) => of.startsWith('part-') || of.startsWith('.lock-'));
  const present = new Set(names);
  for (const name of names) {
    const orphanIndex =
      name.startsWith('part-') &&
      (shard === null || name.includes(`-${shard}-`)) &&
      name.endsWith('.index.json') &&
      !present.has(name.replace(/\.index\.json$/, '.arrow'));
    if (orphanIndex) await fs.rm(path.join(dir, name), { force: true });
  }
}
