/**
 * Every command's name, positionals and one-line description, and where its flags live. This module stays light
 * (no yargs, no command file, no job) so that `featcache --help` lists the commands without loading them, and a run
 * loads the one command file it runs. test/cli/registry.test.ts checks each entry against its command file.
 */
import type { CommandModule } from 'yargs';
import { MODEL_NAMES } from '../fetch/registry.js';

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
  {
    command: 'demo',
    describe: 'the ants/bees tutorial end to end: extract → train-head → predict, with an HTML report',
    load: async () => loaded((await import('./demo.js')).demoCommand),
  },
  {
    command: 'extract',
    describe: 'run the backbone over a dataset split and cache tapped features in Arrow files',
    load: async () => loaded((await import('./extract.js')).extractCommand),
  },
  {
    command: 'inspect <model>',
    describe: "show a model's inputs, outputs and candidate tap points with shapes",
    load: async () => loaded((await import('./inspect.js')).inspectCommand),
  },
  {
    command: 'train-head',
    describe:
      'train a softmax head on cached features (logistic regression by L-BFGS, C × normalisation chosen on folds of train, calibrated) and save it as a TF.js LayersModel',
    load: async () => loaded((await import('./train-head.js')).trainHeadCommand),
  },
  {
    command: 'predict <inputs..>',
    describe: 'classify images (files, URLs, folders, globs, .txt lists) with a trained head: top-k labels',
    load: async () => loaded((await import('./predict.js')).predictCommand),
  },
  {
    command: 'audit',
    describe:
      'find likely label errors and outliers in a cached split (cross-fitted probe + confident learning, kNN consensus); writes a report, never changes labels',
    load: async () => loaded((await import('./audit.js')).auditCommand),
  },
  {
    command: 'export',
    describe: 'export a cached split (de-duplicated) for other tools: parquet, arrow, libsvm/svmlight, npy, csv',
    load: async () => loaded((await import('./export.js')).exportCommand),
  },
  {
    command: 'compact',
    describe:
      "rewrite a split's part files without superseded rows, so tools reading features/<split>/*.arrow directly see each image once",
    load: async () => loaded((await import('./compact.js')).compactCommand),
  },
  {
    command: 'bundle',
    describe:
      'fuse a trained head and its backbone into one ONNX classifier (classes, preprocessing and provenance in its metadata)',
    load: async () => loaded((await import('./bundle.js')).bundleCommand),
  },
  {
    command: 'serve',
    describe:
      'serve a head (or a bundle) over HTTP: POST /predict (and /similar with --similar-split), a page at /, dynamic batching',
    load: async () => loaded((await import('./serve.js')).serveCommand),
  },
  {
    command: 'similar <query..>',
    describe: 'the cached images nearest to each query (an image, folder or URL, or a cached path)',
    load: async () => loaded((await import('./similar.js')).similarCommand),
  },
  {
    command: 'duplicates',
    describe:
      'find exact and near-duplicate images in the cache, within and across splits (train↔val/test leaks first)',
    load: async () => loaded((await import('./duplicates.js')).duplicatesCommand),
  },
  {
    command: 'map',
    describe:
      'every cached image on one offline page: a UMAP layout of the features, coloured by label, prediction or audit score',
    load: async () => loaded((await import('./map.js')).mapCommand),
  },
  {
    command: 'info',
    describe: 'show a feature cache: model, tap, preset, splits, row counts and failed images',
    load: async () => loaded((await import('./info.js')).infoCommand),
  },
  {
    command: 'fetch-model <name>',
    describe: `download a pretrained backbone (${MODEL_NAMES.join(', ')}) into models/ (Hugging Face mirror, then GitHub)`,
    load: async () => loaded((await import('./fetch-model.js')).fetchModelCommand),
  },
  {
    command: 'install-cuda',
    describe:
      "fetch onnxruntime's CUDA 12 execution provider (Linux x64, NVIDIA GPU) and check the CUDA/cuDNN libraries it needs",
    load: async () => loaded((await import('./install-cuda.js')).installCudaCommand),
  },
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
