#!/usr/bin/env node
/**
 * The `featcache` command line: one thin yargs file per command under cli/ (each calls one library job in jobs/),
 * and this one place that registers them and turns errors into exit codes.
 */
import * as os from 'node:os';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ExitCode, FeatcacheError, flagName, nameOptionsWith } from './errors.js';
import { demoCommand } from './cli/demo.js';
import { extractCommand } from './cli/extract.js';
import { infoCommand } from './cli/info.js';
import { inspectCommand } from './cli/inspect.js';
import { predictCommand } from './cli/predict.js';
import { exportCommand } from './cli/export.js';
import { compactCommand } from './cli/compact.js';
import { fetchModelCommand } from './cli/fetch-model.js';
import { installCudaCommand } from './cli/install-cuda.js';
import { trainHeadCommand } from './cli/train-head.js';
import { auditCommand } from './cli/audit.js';
import { bundleCommand } from './cli/bundle.js';
import { serveCommand } from './cli/serve.js';
import { duplicatesCommand } from './cli/duplicates.js';
import { similarCommand } from './cli/similar.js';
import { mapCommand } from './cli/map.js';
import { featcacheVersion } from './version.js';
import { exitQuietlyOnBrokenPipe, isBrokenPipe } from './util/pipe.js';

// sharp decodes on libuv's pool (4 threads by default). On a many-core GPU machine decoding is the bottleneck, so use
// every core; libuv reads this when the pool first starts, which is after these imports. A user's setting wins.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, os.availableParallelism()));

// The library names options as it spells them (batchSize); on the command line they are flags (--batch-size).
nameOptionsWith(flagName);
exitQuietlyOnBrokenPipe();

/**
 * `--shard -1/2` would otherwise be read as a flag `-1/2` ("Unknown argument: 1"): a value that starts with '-'
 * and a digit is glued to its flag, so the flag's own validation names it. So is a lone '-' (`--out -`: stdout),
 * which yargs would take for a positional.
 */
function glueNegativeValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const next = args[i + 1];
    if (/^--[a-z][\w-]*$/.test(args[i]!) && next !== undefined && (/^-\d/.test(next) || next === '-')) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else out.push(args[i]!);
  }
  return out;
}

const argv = glueNegativeValues(hideBin(process.argv));
const debug = argv.includes('--debug');

const ARRAY_ARGUMENTS = new Set(['_', '$0', 'inputs']);

/**
 * Arrays by declaration (variadic positionals such as similar's <query..>, `array: true` flags such as duplicates'
 * --split) keep every value: collapsing them to the last one made `similar a.jpg b.jpg` answer only b.jpg.
 */
function lastValueOfRepeatedFlags(argv: Record<string, unknown>): void {
  // getOptions() is yargs' own (its typings omit it); `array` lists the running command's array options.
  const declared = new Set((cli as unknown as { getOptions(): { array: string[] } }).getOptions().array);
  for (const [key, value] of Object.entries(argv)) {
    if (!ARRAY_ARGUMENTS.has(key) && !declared.has(key) && Array.isArray(value)) argv[key] = value.at(-1);
  }
}

function fail(error: unknown): never {
  // A file output that is a closed pipe (`--report /dev/stdout | head`) fails its write with EPIPE: not an error.
  if (isBrokenPipe(error)) process.exit(ExitCode.ok);
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

// Named so the middleware can ask which options the running command declares as arrays.
const cli = yargs(argv);

try {
  await cli
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
    .command(auditCommand)
    .command(exportCommand)
    .command(compactCommand)
    .command(bundleCommand)
    .command(serveCommand)
    .command(similarCommand)
    .command(duplicatesCommand)
    .command(mapCommand)
    .command(infoCommand)
    .command(fetchModelCommand)
    .command(installCudaCommand)
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
