/**
 * Every command, in `--help` order: its name, positionals and description (command-text.ts, which its command file
 * spreads too) and where its flags live. This module stays light (no yargs, no command file, no job) so that
 * `featcache --help` lists the commands without loading them, and a run loads the one command file it runs.
 */
import type { CommandModule } from 'yargs';
import { COMMAND_TEXT } from './command-text.js';

/** A command file's export: its own flag types are erased here, since only yargs reads them. */
export type LoadedCommand = CommandModule<object, never>;

export interface CommandEntry {
  /** yargs' command string: the name, then the positionals. */
  command: string;
  describe: string;
  /** The command's builder and handler, loaded only when it is the command being run. */
  load: () => Promise<LoadedCommand>;
}

const loaded = (module: unknown) => module as LoadedCommand;

/** In the order `featcache --help` lists them. */
export const COMMANDS: readonly CommandEntry[] = [
  { ...COMMAND_TEXT['demo'], load: async () => loaded((await import('./demo.js')).demoCommand) },
  { ...COMMAND_TEXT['extract'], load: async () => loaded((await import('./extract.js')).extractCommand) },
  { ...COMMAND_TEXT['inspect'], load: async () => loaded((await import('./inspect.js')).inspectCommand) },
  { ...COMMAND_TEXT['train-head'], load: async () => loaded((await import('./train-head.js')).trainHeadCommand) },
  { ...COMMAND_TEXT['predict'], load: async () => loaded((await import('./predict.js')).predictCommand) },
  { ...COMMAND_TEXT['audit'], load: async () => loaded((await import('./audit.js')).auditCommand) },
  { ...COMMAND_TEXT['export'], load: async () => loaded((await import('./export.js')).exportCommand) },
  { ...COMMAND_TEXT['compact'], load: async () => loaded((await import('./compact.js')).compactCommand) },
  { ...COMMAND_TEXT['bundle'], load: async () => loaded((await import('./bundle.js')).bundleCommand) },
  { ...COMMAND_TEXT['serve'], load: async () => loaded((await import('./serve.js')).serveCommand) },
  { ...COMMAND_TEXT['similar'], load: async () => loaded((await import('./similar.js')).similarCommand) },
  { ...COMMAND_TEXT['duplicates'], load: async () => loaded((await import('./duplicates.js')).duplicatesCommand) },
  { ...COMMAND_TEXT['map'], load: async () => loaded((await import('./map.js')).mapCommand) },
  { ...COMMAND_TEXT['info'], load: async () => loaded((await import('./info.js')).infoCommand) },
  { ...COMMAND_TEXT['fetch-model'], load: async () => loaded((await import('./fetch-model.js')).fetchModelCommand) },
  { ...COMMAND_TEXT['install-cuda'], load: async () => loaded((await import('./install-cuda.js')).installCudaCommand) },
];

/** The word that selects a command on the command line. */
export function commandName(entry: CommandEntry): string {
  return entry.command.split(' ')[0]!;
}

/** Global flags that take no value, so the word after one is still the command. */
const GLOBAL_SWITCHES = new Set(['--debug', '--no-debug', '--help', '--version']);

/**
 * Which commands a run must load in full: the one it names, when it is the first word and only global switches come
 * before it (so yargs surely picks the same word); none when no command is named (`--help`, a typo: yargs then
 * answers from names and descriptions alone); all of them when a word could be a flag's value instead.
 */
export function commandsToLoad(args: readonly string[]): 'all' | Set<string> {
  const names = new Set(COMMANDS.map(commandName));
  for (const arg of args) {
    if (arg === '--') return 'all';
    if (arg.startsWith('-')) {
      if (GLOBAL_SWITCHES.has(arg) || arg.includes('=')) continue;
      return 'all';
    }
    return names.has(arg) ? new Set([arg]) : new Set();
  }
  return new Set();
}
