import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

/**
 * Writes a file so that readers see either the old content or the whole new content, never a prefix:
 * write to a temporary sibling, fsync, then rename (atomic within a directory on POSIX).
 */
export async function writeFileAtomic(file: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = temporarySibling(file);
  try {
    await write(tmp);
    const handle = await fs.open(tmp, 'r+');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, file);
  } catch (error) {
    await fs.rm(tmp, { force: true });
    throw error;
  }
}

export function writeBytesAtomic(file: string, data: string | Uint8Array): Promise<void> {
  return writeFileAtomic(file, (tmp) => fs.writeFile(tmp, data));
}

/** Temporary names start with '.' and end with '.tmp' so globbing readers never pick them up. */
export function temporarySibling(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
}

/** The file a temporary sibling stands for and the process that writes it; null for any other name. */
export function parseTemporary(name: string): { of: string; pid: number } | null {
  const match = /^\.(.+)\.(\d+)\.\d+\.tmp$/.exec(name);
  return match ? { of: match[1]!, pid: Number(match[2]) } : null;
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

/**
 * Removes the temporary siblings among `names` (entries of `dir`) whose writer is no longer alive: what a killed
 * featcache process leaves. `ours` narrows it to the temporaries of some files (by the name they stand for).
 */
export async function removeDeadTemporaries(
  dir: string,
  names: readonly string[],
  ours: (of: string) => boolean = () => true,
): Promise<void> {
  for (const name of names) {
    const temporary = parseTemporary(name);
    if (temporary && ours(temporary.of) && !processAlive(temporary.pid))
      await fs.rm(path.join(dir, name), { force: true });
  }
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export function sha256Bytes(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}
