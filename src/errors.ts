/**
 * One error type for everything a user can cause. The CLI prints `message` as a single line and exits with
 * `exitCode`; anything else is a bug and gets a stack trace only under --debug.
 */
export const ExitCode = {
  ok: 0,
  /** A fatal error: nothing more was done, and what was already written is intact. */
  failed: 1,
  /** Bad flags, arguments or input files. */
  usage: 2,
  /** The job finished, but some images could not be used (see the failure ledger). */
  partial: 3,
} as const;

export class FeatcacheError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.usage,
  ) {
    super(message);
    this.name = 'FeatcacheError';
  }
}

/** The single formatter for invalid parameters, so every message has the same shape. */
export function invalidParameter(name: string, expected: string, actual: unknown): FeatcacheError {
  return new FeatcacheError(`${name}: expected ${expected}, got ${describeValue(actual)}`);
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === undefined) return 'nothing';
  return String(value);
}

/** `one of "a", "b"` — lists valid choices in error messages. */
export function oneOf(values: readonly string[]): string {
  return `one of ${values.map((v) => JSON.stringify(v)).join(', ')}`;
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message.split('\n')[0] ?? String(error);
  return String(error);
}
