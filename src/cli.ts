#!/usr/bin/env node
/** The `featcache` command line: one yargs command per file under commands/, one place that turns errors into exit codes. */
import * as os from 'node:os';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ExitCode, FeatcacheError } from './errors.js';
import { extractCommand } from './commands/extract.js';
import { inspectCommand } from './commands/inspect.js';
import { trainHeadCommand } from './commands/train-head.js';
import { predictCommand } from './commands/predict.js';
import { fetchModelCommand } from './commands/fetch-model.js';
import { demoCommand } from './commands/demo.js';
import { infoCommand } from './commands/info.js';
import { exportCommand } from './cli/export.js';
import { compactCommand } from './cli/compact.js';
import { featcacheVersion } from './version.js';

// sharp decodes on libuv's pool (4 threads by default). On a many-core GPU machine decoding is the bottleneck, so use
// every core; libuv reads this when the pool first starts, which is after these imports. A user's setting wins.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, os.availableParallelism()));

/** `--out -` means stdout, but yargs takes a lone '-' for a positional: attach it to the flag before it. */
function attachDashValues(args: string[]): string[] {
  const result: string[] = [];
  for (const arg of args) {
    const previous = result.at(-1);
    if (arg === '-' && previous?.startsWith('--') && !previous.includes('=')) result[result.length - 1] = `${previous}=-`;
    else result.push(arg);
  }
  return result;
}

const argv = attachDashValues(hideBin(process.argv));
const debug = argv.includes('--debug');

const ARRAY_ARGUMENTS = new Set(['_', '$0', 'inputs']);

function lastValueOfRepeatedFlags(argv: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(argv)) {
    if (!ARRAY_ARGUMENTS.has(key) && Array.isArray(value)) argv[key] = value.at(-1);
  }
}

function fail(error: unknown): never {
  if (error instanceof FeatcacheError) {
    process.stderr.write(`featcache: ${error.message}\n`);
    if (debug) process.stderr.write(`${error.stack}\n`);
    process.exit(error.exitCode);
  }
  const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
  process.stderr.write(`featcache: ${message}${debug ? '' : ' (re-run with --debug for a stack trace)'}\n`);
  if (debug && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  process.exit(ExitCode.failed);
}

try {
  await yargs(argv)
    .scriptName('featcache')
    // A flag given twice takes its last value (as most CLIs do) instead of becoming an array; positionals such as
    // predict's <inputs..> are arrays by design and stay so.
    .middleware(lastValueOfRepeatedFlags, true)
    .version(featcacheVersion)
    .command(demoCommand)
    .command(extractCommand)
    .command(inspectCommand)
    .command(trainHeadCommand)
    .command(predictCommand)
    .command(exportCommand)
    .command(compactCommand)
    .command(infoCommand)
    .command(fetchModelCommand)
    .option('debug', { type: 'boolean', default: false, describe: 'print stack traces for errors', global: true })
    .demandCommand(1, 'featcache: give a command (see featcache --help)')
    .strict()
    .fail((message, error) => {
      if (error) throw error;
      process.stderr.write(`featcache: ${message} (see featcache --help)\n`);
      process.exit(ExitCode.usage);
    })
    .wrap(Math.min(120, process.stdout.columns || 100))
    .parseAsync();
} catch (error) {
  fail(error);
}
