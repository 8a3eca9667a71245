/** `featcache fetch-model NAME`: the CLI face of jobs/fetch-model.ts (flags, progress bar, output). */
import cliProgress from 'cli-progress';
import type { Argv } from 'yargs';
import { FeatcacheError, invalidParameter, oneOf } from '../errors.js';
import { DEFAULT_FETCH_MODEL_OPTIONS } from '../jobs/defaults.js';
import { MODEL_NAMES, MODEL_SOURCES } from '../fetch/registry.js';
import { defineCommand, emit, jsonOption } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

function seconds(flag: string, value: number): number {
  if (!(value > 0)) throw invalidParameter(flag, 'a positive number of seconds', value);
  return value * 1000;
}

export const fetchModelCommand = defineCommand({
  ...COMMAND_TEXT['fetch-model'],
  builder: (y: Argv) =>
    y
      .positional('name', { type: 'string', describe: `model name: ${MODEL_NAMES.join(', ')}` })
      .option('dir', { type: 'string', default: DEFAULT_FETCH_MODEL_OPTIONS.dir, describe: 'directory to save into' })
      .option('url', { type: 'string', describe: 'download from this URL only (a mirror of your own)' })
      .option('sha256', { type: 'string', describe: 'expected sha256 of the file (verified before it is kept)' })
      .option('retries', {
        type: 'number',
        default: DEFAULT_FETCH_MODEL_OPTIONS.retries,
        describe: 'retries per source after a dropped or stalled transfer',
      })
      .option('connect-timeout', {
        type: 'number',
        default: DEFAULT_FETCH_MODEL_OPTIONS.connectTimeoutMs / 1000,
        describe: 'seconds to wait for a connection',
      })
      .option('stall-timeout', {
        type: 'number',
        default: DEFAULT_FETCH_MODEL_OPTIONS.stallTimeoutMs / 1000,
        describe: 'seconds without a byte before a transfer is retried',
      })
      .option('json', jsonOption),
  handler: async (a) => {
    if (!MODEL_SOURCES[a.name!] && a.url === undefined)
      throw new FeatcacheError(
        `<name>: expected ${oneOf(MODEL_NAMES)}, or any name with --url, got ${JSON.stringify(a.name)}`,
      );
    if (a.sha256 !== undefined && !/^[0-9a-f]{64}$/i.test(String(a.sha256)))
      throw invalidParameter('--sha256', '64 hex digits', a.sha256);
    if (!Number.isInteger(a.retries) || a.retries < 0)
      throw invalidParameter('--retries', 'a whole number ≥ 0', a.retries);
    const bar =
      !a.json && process.stderr.isTTY
        ? new cliProgress.SingleBar(
            {
              format: `${a.name} |{bar}| {percentage}% {value}/{total} bytes | ETA {eta_formatted}`,
              stream: process.stderr,
            },
            cliProgress.Presets.shades_classic,
          )
        : null;
    let started = false;
    const { fetchModel } = await import('../jobs/fetch-model.js');
    const r = await fetchModel({
      name: a.name,
      dir: a.dir,
      urls: a.url === undefined ? undefined : [String(a.url)],
      sha256: a.sha256,
      retries: a.retries,
      connectTimeoutMs: seconds('--connect-timeout', a['connect-timeout']),
      stallTimeoutMs: seconds('--stall-timeout', a['stall-timeout']),
      log: (line) => process.stderr.write(`${line}\n`),
      onProgress: (received, total) => {
        if (!bar || total === null) return;
        if (!started) bar.start(total, received);
        started = true;
        bar.update(received);
      },
    }).finally(() => bar?.stop());
    emit(
      a.json,
      r,
      () =>
        `fetch-model ${r.name}: ${r.status} ${r.file} (${(r.bytes / 1e6).toFixed(1)} MB, sha256 ${r.sha256}, verified by ${r.verifiedBy}; tap ${r.tap}${r.source ? `; from ${r.source}` : ''})`,
    );
  },
});
