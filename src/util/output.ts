/**
 * Where featcache writes what a user asks for. One rule for every output: featcache replaces only what it can prove
 * it wrote — a regular file it is asked to overwrite, or files listed in its own marker inside a directory. A
 * non-empty directory it did not create is refused; devices, FIFOs and `-` (stdout) are written through, so
 * `--out /dev/stdout` and pipes work; symlinks are followed, so the link stays and its target gets the content.
 */
import type { FileHandle } from 'node:fs/promises';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, invalidParameter, optionName, ExitCode } from '../errors.js';
import { removeDeadTemporaries, temporarySibling, writeBytesAtomic } from './fsx.js';
import { isBrokenPipe } from './pipe.js';

/** The name that means standard output. */
export const STDOUT = '-';
/** Paths that name this process's standard output; written through its stream, as opening them fails for sockets. */
const STDOUT_PATHS = new Set([STDOUT, '/dev/stdout', '/dev/fd/1', '/proc/self/fd/1']);

/** Where an output's bytes go: a file handle, or standard output's stream. */
export interface OutputSink {
  write(data: string | Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** A file handle as a sink; `written` counts the bytes it wrote, so a commit can check the file holds them all. */
export function fileSink(handle: FileHandle, written = { bytes: 0 }): OutputSink {
  return {
    // write() may write less than asked (a full disk or a file size limit ends a write early without an error): loop,
    // and treat a write that makes no progress as the full disk it is.
    write: async (data) => {
      const bytes = typeof data === 'string' ? Buffer.from(data) : data;
      let offset = 0;
      while (offset < bytes.length) {
        const { bytesWritten } = await handle.write(bytes, offset, bytes.length - offset);
        if (bytesWritten === 0) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        offset += bytesWritten;
        written.bytes += bytesWritten;
      }
    },
    close: () => handle.close(),
  };
}

/**
 * Standard output as a sink, honouring backpressure. Only used when the caller names `-` (or /dev/stdout) as the
 * output: then the user asked for the data there. Not closed: the CLI still prints to it.
 */
function stdoutSink(): OutputSink {
  const stream = process.stdout;
  let failure: Error | null = null;
  // A closed pipe (`| head`) is reported as a write error, not an unhandled 'error' event.
  const onError = (error: Error) => {
    failure = error;
  };
  stream.on('error', onError);
  return {
    // One write in flight at a time: the callback is the backpressure.
    write: (data) =>
      new Promise<void>((resolve, reject) => {
        if (failure) return reject(failure);
        stream.write(data, (error) => (error ? reject(error) : resolve()));
      }),
    close: async () => {
      stream.off('error', onError);
      if (failure) throw failure;
    },
  };
}

export interface OutputFile {
  /** The path as the caller gave it. */
  readonly target: string;
  /** Symlinks resolved: the node that receives the content ('/dev/stdout' for `-`). */
  readonly resolved: string;
  /** `file`: written to a temporary sibling and renamed in on commit. `stream`: written through, nothing to rename. */
  readonly kind: 'file' | 'stream';
  /** Opens the node to write (the temporary sibling for a file). */
  open(): Promise<OutputSink>;
  /** Makes the content visible: fsync + rename for a file; nothing for a stream. */
  commit(): Promise<void>;
  /** Removes the temporary sibling; a stream cannot be unwritten. */
  abort(): Promise<void>;
}

/** How many symlinks a path may go through, as the kernel's ELOOP limit. */
const MAX_LINKS = 40;

/** Follows symlinks to the node that would be written, also when the last link dangles (its target is then created). */
async function resolveLinks(target: string): Promise<string> {
  let current = path.resolve(target);
  for (let hop = 0; hop < MAX_LINKS; hop++) {
    const stat = await fs.lstat(current).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return null;
      throw error;
    });
    if (!stat?.isSymbolicLink()) {
      const parent = await fs.realpath(path.dirname(current)).catch(() => path.dirname(current));
      return path.join(parent, path.basename(current));
    }
    current = path.resolve(path.dirname(current), await fs.readlink(current));
  }
  throw Object.assign(new Error(`too many symbolic links at ${target}`), { code: 'ELOOP' });
}

function cannotWrite(option: string, target: string, error: unknown, kind: 'file' | 'stream' = 'file'): FeatcacheError {
  const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
  const kept = kind === 'stream' ? 'what went through is incomplete' : 'nothing was written';
  return new FeatcacheError(`${optionName(option)} ${target}: cannot write (${code}); ${kept}`, ExitCode.failed);
}

/**
 * Opens a single-file output under the rule above. `option` names the option in error messages (e.g. `out`).
 * A directory at `target` is refused: a file output never replaces one.
 */
export async function openOutputFile(target: string, option = 'out'): Promise<OutputFile> {
  if (STDOUT_PATHS.has(target))
    return {
      target,
      resolved: '/dev/stdout',
      kind: 'stream',
      open: async () => stdoutSink(),
      commit: async () => {},
      abort: async () => {},
    };
  let resolved: string;
  try {
    // stat follows every link, also /dev/stdout → /proc/self/fd/1 → pipe:[…], which has no path to resolve.
    const stat = await fs.stat(target).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return null;
      throw error;
    });
    if (stat?.isDirectory())
      throw invalidParameter(
        option,
        'a file path (it is replaced only if it is a regular file)',
        `${target}, a directory`,
      );
    if (stat && !stat.isFile()) return streamOutput(target);
    resolved = await resolveLinks(target);
  } catch (error) {
    if (error instanceof FeatcacheError) throw error;
    throw cannotWrite(option, target, error);
  }
  const tmp = temporarySibling(resolved);
  const written = { bytes: 0 };
  return {
    target,
    resolved,
    kind: 'file',
    open: () =>
      fs.open(tmp, 'w').then(
        (handle) => fileSink(handle, written),
        (error) => {
          throw cannotWrite(option, target, error);
        },
      ),
    commit: async () => {
      await syncFile(tmp);
      // The last check before the old file is replaced: the new one holds every byte the writer produced.
      const { size } = await fs.stat(tmp);
      if (size !== written.bytes)
        throw Object.assign(new Error(`short write: ${size} of ${written.bytes} bytes`), { code: 'EIO' });
      await fs.rename(tmp, resolved);
    },
    abort: () => fs.rm(tmp, { force: true }),
  };
}

/** Devices and FIFOs: opened in place (through any links) and written through. */
function streamOutput(target: string): OutputFile {
  return {
    target,
    resolved: target,
    kind: 'stream',
    open: async () => fileSink(await fs.open(target, 'w')),
    commit: async () => {},
    abort: async () => {},
  };
}

async function syncFile(file: string): Promise<void> {
  const handle = await fs.open(file, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes a whole small file (a side file such as classes.txt) under the same rule. */
export async function writeOutputFile(target: string, content: string | Uint8Array, option = 'out'): Promise<void> {
  const output = await openOutputFile(target, option);
  try {
    const sink = await output.open();
    try {
      await sink.write(content);
    } finally {
      await sink.close();
    }
    await output.commit();
  } catch (error) {
    await output.abort();
    // A closed pipe is the caller's to ignore; anything else (ENOSPC, EROFS, EIO) is said with the file it hit,
    // since a write on an open handle is reported by Node without a path.
    if (error instanceof FeatcacheError || isBrokenPipe(error)) throw error;
    throw cannotWrite(option, target, error, output.kind);
  }
}

/** Contents of the marker featcache leaves in every directory it writes: the files it may later replace. */
export interface OutputMarker {
  writtenBy: 'featcache';
  files: string[];
}

export interface OutputDir {
  /** The directory (symlinks resolved). */
  readonly dir: string;
  /** Whether this call created the directory. */
  readonly created: boolean;
  /** Where to write `name` now: a temporary name inside the directory, renamed to `name` on commit. */
  file(name: string): string;
  /** Renames every file written in, then removes files of an earlier featcache output that this one no longer has. */
  commit(): Promise<void>;
  /** Removes what this output wrote (and the directory, if it created it and left it empty). */
  abort(): Promise<void>;
}

/**
 * The directory `target` leads to, what it holds (null: it does not exist yet), and the files an earlier featcache
 * output listed in `marker` there; refused when it holds files featcache cannot prove it wrote.
 */
async function claimOutputDir(
  target: string,
  marker: string,
  option: string,
): Promise<{ dir: string; entries: string[] | null; previous: string[] }> {
  let dir: string;
  let entries: string[] | null;
  try {
    dir = await resolveLinks(target);
    entries = await fs.readdir(dir).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return null;
      throw error;
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR' && (await isFile(path.resolve(target)))) {
      throw invalidParameter(option, 'a directory (this format writes several files)', `${target}, a file`);
    }
    throw cannotWrite(option, target, error);
  }
  let previous: string[] = [];
  if (entries && entries.length > 0) {
    const existing = entries.includes(marker) ? await readMarker(path.join(dir, marker)) : null;
    if (!existing) {
      const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? ', …' : '');
      throw invalidParameter(
        option,
        `a new or empty directory, or one featcache wrote (with ${marker})`,
        `${target}, which holds ${entries.length} file(s) featcache did not write (${shown}); choose another directory`,
      );
    }
    previous = existing.files;
    await removeDeadTemporaries(dir, entries);
  }
  return { dir, entries, previous };
}

/**
 * Prepares a directory output. A new or empty directory is taken; a directory holding `marker` (written by an
 * earlier featcache output) is updated, replacing only the files the marker lists; anything else is refused with a
 * one-line error, so `--out .` or `--out ~/thesis` never loses a user's file.
 */
export async function prepareOutputDir(target: string, marker: string, option = 'out'): Promise<OutputDir> {
  if (STDOUT_PATHS.has(target))
    throw invalidParameter(option, 'a directory (this format writes several files)', target);
  const { dir, entries, previous } = await claimOutputDir(target, marker, option);
  const created = entries === null;
  try {
    if (created) await fs.mkdir(dir);
  } catch (error) {
    throw cannotWrite(option, target, error);
  }
  const written = new Map<string, string>();
  const markerFile = path.join(dir, marker);
  const writeMarker = (files: string[]) =>
    writeBytesAtomic(
      markerFile,
      `${JSON.stringify({ writtenBy: 'featcache', files } satisfies OutputMarker, null, 2)}\n`,
    );
  // Marked before anything else is written, so what a killed run leaves behind is recognisably featcache's.
  if (created || entries?.length === 0) await writeMarker(previous);
  return {
    dir,
    created,
    file(name: string) {
      if (name.includes('/') || name === marker) throw new Error(`output file name ${name} is not a plain name`);
      if (entries?.includes(name) && !previous.includes(name)) throw notOurs(option, path.join(target, name));
      let tmp = written.get(name);
      if (!tmp) written.set(name, (tmp = temporarySibling(path.join(dir, name))));
      return tmp;
    },
    async commit() {
      const names = [...written.keys()];
      // The marker lists every featcache file at every moment, so a kill between these steps leaves nothing that a
      // later run may not replace.
      await writeMarker([...new Set([...previous, ...names])]);
      for (const [name, tmp] of written) {
        await syncFile(tmp);
        await fs.rename(tmp, path.join(dir, name));
      }
      for (const name of previous) if (!written.has(name)) await fs.rm(path.join(dir, name), { force: true });
      await writeMarker(names);
    },
    async abort() {
      for (const tmp of written.values()) await fs.rm(tmp, { force: true });
      if (previous.length === 0) await fs.rm(markerFile, { force: true });
      if (created) await fs.rmdir(dir).catch(() => {});
    },
  };
}

/** A file featcache would replace but cannot prove it wrote. */
export function notOurs(option: string, file: string): FeatcacheError {
  return new FeatcacheError(
    `${optionName(option)}: ${file} exists and featcache cannot prove it wrote it; move it away or choose another ${optionName(option)} (nothing was written)`,
  );
}

/**
 * Refuses to go on when `file` exists and `ours` cannot recognise its content as featcache's (a marker or provenance
 * it wrote): the rule for every file featcache writes beside or instead of a user's — side files, reports.
 */
export async function requireOursOrAbsent(
  file: string,
  option: string,
  ours: (content: Buffer) => boolean | Promise<boolean>,
): Promise<void> {
  if (STDOUT_PATHS.has(file)) return;
  const stat = await fs.stat(file).catch(() => null);
  if (!stat?.isFile()) return;
  const content = await fs.readFile(file).catch(() => null);
  if (content === null || !(await ours(content))) throw notOurs(option, file);
}

async function isFile(file: string): Promise<boolean> {
  return fs.stat(file).then(
    (s) => !s.isDirectory(),
    () => false,
  );
}

async function readMarker(file: string): Promise<OutputMarker | null> {
  try {
    const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as OutputMarker;
    const plain = (n: unknown) => typeof n === 'string' && n.length > 0 && !n.includes('/') && n !== '.' && n !== '..';
    return parsed.writtenBy === 'featcache' && Array.isArray(parsed.files) && parsed.files.every(plain) ? parsed : null;
  } catch {
    return null;
  }
}
