/**
 * Flags shared by several commands, each documented with the library's default, so every command spells them the
 * same and --help always shows the real default. Only the CLI layer imports yargs.
 */
import type { ArgumentsCamelCase, Argv, CommandModule, Options } from 'yargs';
import type { UrlSourceOptions } from '../dataset/url.js';
import { DEFAULT_URL_OPTIONS as U } from '../dataset/url-defaults.js';
import { DEFAULT_HEAD_DIR } from '../head/saved.js';
import { PRESET_NAMES } from '../image/presets.js';
import { DEFAULT_EXTRACT_OPTIONS as X } from '../jobs/defaults.js';

/**
 * A command whose handler receives the types its builder declares, so each flag is typed where it is passed on. The
 * library still validates every value (and names the flag in its message): choices and ranges live there.
 */
export function defineCommand<A>(module: {
  command: string;
  describe: string;
  builder: (y: Argv) => Argv<A>;
  handler: (args: ArgumentsCamelCase<A>) => void | Promise<void>;
}): CommandModule<object, A> {
  return module;
}

export const cacheOption = {
  type: 'string',
  default: X.cache,
  describe: 'feature cache directory',
} satisfies Options;
export const jsonOption = {
  type: 'boolean',
  default: false,
  describe: 'machine-readable JSON on stdout',
} satisfies Options;
export const headOption = {
  type: 'string',
  default: DEFAULT_HEAD_DIR,
  describe: 'head directory written by train-head',
} satisfies Options;

export const backboneOptions = {
  model: { type: 'string', default: X.model, describe: 'ONNX backbone file' },
  tap: {
    type: 'string',
    default: X.tap,
    describe: 'tensor to tap: "avgpool" (the pool feeding the classifier), a node, tensor or PyTorch module name',
  },
  device: { type: 'string', default: X.device, describe: 'auto | cpu | cuda | cuda:N (auto tries CUDA, then CPU)' },
  threads: { type: 'number', default: X.threads, describe: 'onnxruntime intra-op threads (0 = one per core)' },
  'batch-size': {
    type: 'number',
    default: X.batchSize,
    describe: 'images per inference call (capped so a batch stays under 256 MiB)',
  },
} satisfies Record<string, Options>;

export const imageOptions = {
  preset: { type: 'string', default: X.preset, choices: PRESET_NAMES, describe: 'preprocessing preset' },
  exif: {
    type: 'string',
    default: X.exif,
    describe: 'EXIF orientation: ignore (as PIL/torchvision) or apply (rotate upright)',
  },
  icc: { type: 'string', default: X.icc, describe: 'embedded colour profiles: ignore (as PIL) or convert to sRGB' },
  'max-pixels': {
    type: 'number',
    default: X.maxPixels,
    describe: 'refuse images with more pixels (decompression bombs)',
  },
} satisfies Record<string, Options>;

/** How URL inputs are fetched (extract and predict). */
export const fetchOptions = {
  'fetch-concurrency': { type: 'number', default: U.concurrency, describe: 'URLs fetched at once, ahead of decoding' },
  'fetch-timeout': {
    type: 'number',
    default: U.timeoutMs / 1000,
    describe: 'seconds per request attempt, to the last byte',
  },
  'fetch-retries': {
    type: 'number',
    default: U.retries,
    describe: 'retries (exponential backoff) after 5xx, 408, 429, timeouts and dropped connections',
  },
  'fetch-max-bytes': { type: 'number', default: U.maxBytes, describe: 'larger responses fail without being kept' },
} satisfies Record<string, Options>;

/** The parsed values of {@link fetchOptions}. */
interface FetchArgs {
  'fetch-concurrency': number;
  'fetch-timeout': number;
  'fetch-retries': number;
  'fetch-max-bytes': number;
}

export function fetchFrom(a: FetchArgs): Partial<UrlSourceOptions> {
  return {
    concurrency: a['fetch-concurrency'],
    timeoutMs: a['fetch-timeout'] * 1000,
    retries: a['fetch-retries'],
    maxBytes: a['fetch-max-bytes'],
  };
}

/** Prints a result as JSON or as the human line(s). */
export function emit(json: boolean, result: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(result)}\n` : `${human()}\n`);
}

/** Where library notes go on the command line: stderr, so stdout stays clean for --json. */
export const logToStderr = (line: string): void => {
  process.stderr.write(`${line}\n`);
};
