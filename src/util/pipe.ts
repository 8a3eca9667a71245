/**
 * `featcache predict --report /dev/stdout | head` closes the pipe before featcache is done writing. The reader has
 * what it wanted, so featcache stops quietly, as Unix tools do, instead of printing an EPIPE stack trace.
 */
import { ExitCode } from '../errors.js';

export function isBrokenPipe(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === 'EPIPE';
}

/** Exits 0 when stdout's or stderr's reader goes away; any other stream error is still thrown. */
export function exitQuietlyOnBrokenPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error) => {
      if (isBrokenPipe(error)) process.exit(ExitCode.ok);
      throw error;
    });
  }
}
