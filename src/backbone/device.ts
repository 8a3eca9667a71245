/**
 * Device names, thread counts and the session thread's stack, apart from the session so that a job checks them and
 * starts its session worker without loading onnxruntime on its own thread.
 */
import { readFileSync } from 'node:fs';
import { invalidParameter } from '../errors.js';

export type DeviceSpec = { kind: 'auto' } | { kind: 'cpu' } | { kind: 'cuda'; deviceId: number };

export function parseDevice(value: string): DeviceSpec {
  if (value === 'auto' || value === 'cpu') return { kind: value };
  const match = /^cuda(?::(\d+))?$/.exec(value);
  if (match) return { kind: 'cuda', deviceId: Number(match[1] ?? 0) };
  throw invalidParameter('device', 'one of "auto", "cpu", "cuda", "cuda:N"', value);
}

/**
 * onnxruntime aborts the whole process (no catchable error) when asked for a thread pool it cannot create, e.g.
 * `--threads 100000`; no machine featcache targets has more cores than this.
 */
export const MAX_THREADS = 1024;

/** `--threads`: an integer in [0, MAX_THREADS], 0 meaning one per core. */
export function threadCount(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_THREADS)
    throw invalidParameter('threads', `an integer in [0, ${MAX_THREADS}] (0 = one per core)`, value);
  return value;
}

/**
 * Stack for a thread that creates onnxruntime sessions. onnxruntime reads the process's command line
 * (/proc/self/cmdline) when it creates a session and walks it recursively: measured, a little over one native frame
 * and ~110 bytes of stack per byte of command line. A 35 KB `featcache predict $(cat list.txt)` overflowed a worker's
 * default 4 MB stack and segfaulted (the main thread's 8 MB fails near 40 KB). So the session worker's stack is sized
 * from the actual command line, with room to spare; it is reserved, not committed, so it costs no memory.
 */
export function sessionStackMb(commandLineBytes: number = ownCommandLineBytes()): number {
  return Math.max(8, Math.ceil((commandLineBytes * 256) / 2 ** 20) + 8);
}

function ownCommandLineBytes(): number {
  try {
    return readFileSync('/proc/self/cmdline').length;
  } catch {
    return process.argv.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);
  }
}
