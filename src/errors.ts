/**
 * One error type for everything a user can cause, and the formatters that word it. The CLI prints `message` as a
 * single line and exits with `exitCode`; anything else is a bug and gets a stack trace only under --debug.
 *
 * Library code names options as the library spells them (`batchSize`); the CLI installs a namer so the same message
 * says `--batch-size`. That keeps one wording for both audiences without the library knowing about flags.
 */
export const ExitCode = {
  ok: 0,
  /** A fatal error: nothing more was done, and what was already written is intact. */
  failed: 1,
  /** Bad flags, arguments or input files. */
  usage: 2,
  /** The job finished, but some images could not be used (see the failure ledger). */
  partial: 3,
  /** Stopped by Ctrl-C (128 + SIGINT, as shells report it); nothing half-written was left. */
  interrupted: 130,
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

let namer: (option: string) => string = (option) => option;

/** Installs how options are named in messages (the CLI: `batchSize` → `--batch-size`). */
export function nameOptionsWith(name: (option: string) => string): void {
  namer = name;
}

/** Whether options are named as CLI flags here (worker threads are told, so their messages match). */
export function namesOptionsAsFlags(): boolean {
  return namer === flagName;
}

/** An option as the current audience spells it. */
export function optionName(option: string): string {
  return namer(option);
}

/** `--batch-size` from `batchSize`: the CLI's namer. */
export function flagName(option: string): string {
  if (option.startsWith('-')) return option;
  return `--${option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The single formatter for invalid values, so every message has the same shape: `option: expected …, got …`. */
export function invalidParameter(option: string, expected: string, actual: unknown): FeatcacheError {
  return new FeatcacheError(`${optionName(option)}: expected ${expected}, got ${describeValue(actual)}`);
}

/**
 * The single formatter for a file or directory that is not there: `option file: not found; remedy`.
 * `option` is null for files featcache looks for itself (e.g. inside a cache).
 */
export function missingFile(option: string | null, file: string, remedy: string, what = 'not found'): FeatcacheError {
  return new FeatcacheError(`${option ? `${optionName(option)} ` : ''}${file}: ${what}; ${remedy}`);
}

/** A --model that is not there, said one way wherever a backbone is opened (here, so saying it loads no ONNX code). */
export function missingModel(file: string): FeatcacheError {
  return missingFile(
    'model',
    file,
    "fetch one with 'featcache fetch-model resnet50' or pass a path to an .onnx file",
    'no such file',
  );
}

/**
 * The single formatter for a file featcache reads that is damaged or not what it should be (exit 1: not a usage slip):
 * `option file: problem; remedy`. `option` names the flag that pointed there, if one did.
 */
export function damagedFile(file: string, problem: string, remedy: string, option?: string): FeatcacheError {
  return new FeatcacheError(`${option ? `${optionName(option)} ` : ''}${file}: ${problem}; ${remedy}`, ExitCode.failed);
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === undefined) return 'nothing';
  if (typeof value === 'number' && Number.isNaN(value)) return 'not a number';
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  // A list as String() writes it; anything else as JSON rather than "[object Object]".
  return Array.isArray(value) ? value.join(',') : (JSON.stringify(value) ?? typeof value);
}

/** `one of "a", "b"` — lists valid choices in error messages. */
export function oneOf(values: readonly string[]): string {
  return `one of ${values.map((v) => JSON.stringify(v)).join(', ')}`;
}

/** A value that must be one of a fixed set; the error lists the set. */
export function parseChoice<T extends string>(option: string, value: unknown, choices: readonly T[]): T {
  if (typeof value === 'string' && (choices as readonly string[]).includes(value)) return value as T;
  throw invalidParameter(option, oneOf(choices), value);
}

export function positiveInteger(option: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1)
    throw invalidParameter(option, 'a positive integer', value);
  return value;
}

export function nonNegativeInteger(option: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0)
    throw invalidParameter(option, 'an integer >= 0', value);
  return value;
}

/** A finite number within [min, max] (inclusive unless `exclusive`). */
export function numberIn(option: string, value: unknown, min: number, max: number, exclusive = false): number {
  const inside =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (exclusive ? value > min && value < max : value >= min && value <= max);
  if (!inside) {
    const range = exclusive
      ? `between ${min} and ${max} (exclusive)`
      : max === Infinity
        ? `a number >= ${min}`
        : `a number in [${min}, ${max}]`;
    throw invalidParameter(option, range, value);
  }
  return value;
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message.split('\n')[0] ?? String(error);
  return String(error);
}
