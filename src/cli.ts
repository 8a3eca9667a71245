#!/usr/bin/env node
/**
 * The `featcache` command line: one thin yargs file per command under cli/ (each calls one library job in jobs/),
 * and this one place that registers them and turns errors into exit codes. Start-up is paid per keystroke, so
 * `--version` answers before yargs loads, and a run loads only the command file it runs (cli/registry.ts names the
 * others for --help).
 */
import * as os from 'node:os';
import type { Argv } from 'yargs';
import { ExitCode, FeatcacheError, flagName, nameOptionsWith } from './errors.js';
import { COMMANDS, commandName, commandsToLoad, type LoadedCommand } from './cli/registry.js';
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

/**
 * `-h` and `-v` as most tools read them. No command has short flags, and yargs' own aliases would indent every
 * command's flag list to make room for them.
 */
const SHORT_SWITCHES: Record<string, string> = { '-h': '--help', '-v': '--version' };

// yargs' hideBin() is this slice outside Electron; importing it would load yargs for --version.
const argv = glueNegativeValues(process.argv.slice(2)).map((arg) => SHORT_SWITCHES[arg] ?? arg);
const debug = argv.includes('--debug');

const ARRAY_ARGUMENTS = new Set(['_', '$0', 'inputs']);

/**
 * Arrays by declaration (variadic positionals such as similar's <query..>, `array: true` flags such as duplicates'
 * --split) keep every value: collapsing them to the last one made `similar a.jpg b.jpg` answer only b.jpg.
 */
function lastValueOfRepeatedFlags(cli: Argv, argv: Record<string, unknown>): void {
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

/**
 * The commands as yargs sees them: in full for those this run needs, by name and description only for the others,
 * which is all `featcache --help` and an unknown command's error read.
 */
async function commandModules(args: readonly string[]): Promise<LoadedCommand[]> {
  const wanted = commandsToLoad(args);
  return Promise.all(
    COMMANDS.map(async (entry) => {
      if (wanted === 'all' || wanted.has(commandName(entry))) return entry.load();
      return {
        command: entry.command,
        describe: entry.describe,
        handler: () => {
          throw new Error(`featcache ${commandName(entry)} ran without its command file`);
        },
      };
    }),
  );
}

async function main(): Promise<void> {
  const [{ default: yargs }, commands] = await Promise.all([import('yargs'), commandModules(argv)]);
  // Named so the middleware can ask which options the running command declares as arrays.
  const cli = yargs(argv);
  cli
    .scriptName('featcache')
    // A flag given twice takes its last value (as most CLIs do) instead of becoming an array; positionals such as
    // predict's <inputs..> are arrays by design and stay so.
    .middleware((a) => lastValueOfRepeatedFlags(cli, a), true)
    .version(featcacheVersion);
  for (const command of commands) cli.command(command);
  await cli
    .option('debug', { type: 'boolean', default: false, describe: 'print stack traces for errors', global: true })
    .demandCommand(1, 'give a command')
    .strict()
    .fail((message, error) => {
      if (error) throw error;
      process.stderr.write(`featcache: ${message} (see featcache --help)\n`);
      process.exit(ExitCode.usage);
    })
    .wrap(Math.min(120, process.stdout.columns || 100))
    .parseAsync();
}

// The one answer that needs nothing but package.json, so a shell's `featcache --version` costs little more than node.
if (argv.length === 1 && argv[0] === '--version') process.stdout.write(`${featcacheVersion}\n`);
else await main().catch(fail);
