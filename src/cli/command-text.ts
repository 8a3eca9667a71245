/**
 * Each command's yargs command string (name, then positionals) and one-line description, once: the registry lists
 * them for `featcache --help` without loading the command files, and each command file spreads its own entry.
 */
import { MODEL_NAMES } from '../fetch/registry.js';

export const COMMAND_TEXT = Object.freeze({
  demo: {
    command: 'demo',
    describe: 'the ants/bees tutorial end to end: extract → train-head → predict, with an HTML report',
  },
  extract: {
    command: 'extract',
    describe: 'run the backbone over a dataset split and cache tapped features in Arrow files',
  },
  inspect: {
    command: 'inspect <model>',
    describe: "show a model's inputs, outputs and candidate tap points with shapes",
  },
  'train-head': {
    command: 'train-head',
    describe:
      'train a softmax head on cached features (logistic regression by L-BFGS, C × normalisation chosen on folds of train, calibrated) and save it as a TF.js LayersModel',
  },
  predict: {
    command: 'predict <inputs..>',
    describe: 'classify images (files, URLs, folders, globs, .txt lists) with a trained head: top-k labels',
  },
  audit: {
    command: 'audit',
    describe:
      'find likely label errors and outliers in a cached split (cross-fitted probe + confident learning, kNN consensus); writes a report, never changes labels',
  },
  export: {
    command: 'export',
    describe: 'export a cached split (de-duplicated) for other tools: parquet, arrow, libsvm/svmlight, npy, csv',
  },
  compact: {
    command: 'compact',
    describe:
      "rewrite a split's part files without superseded rows, so tools reading features/<split>/*.arrow directly see each image once",
  },
  bundle: {
    command: 'bundle',
    describe:
      'fuse a trained head and its backbone into one ONNX classifier (classes, preprocessing and provenance in its metadata)',
  },
  serve: {
    command: 'serve',
    describe:
      'serve a head (or a bundle) over HTTP: POST /predict (and /similar with --similar-split), a page at /, dynamic batching',
  },
  similar: {
    command: 'similar <query..>',
    describe: 'the cached images nearest to each query (an image, folder or URL, or a cached path)',
  },
  duplicates: {
    command: 'duplicates',
    describe:
      'find exact and near-duplicate images in the cache, within and across splits (train↔val/test leaks first)',
  },
  map: {
    command: 'map',
    describe:
      'every cached image on one offline page: a UMAP layout of the features, coloured by label, prediction or audit score',
  },
  info: {
    command: 'info',
    describe: 'show a feature cache: model, tap, preset, splits, row counts and failed images',
  },
  'fetch-model': {
    command: 'fetch-model <name>',
    describe: `download a pretrained backbone (${MODEL_NAMES.join(', ')}) into models/ (Hugging Face mirror, then GitHub)`,
  },
  'install-cuda': {
    command: 'install-cuda',
    describe:
      "fetch onnxruntime's CUDA 12 execution provider (Linux x64, NVIDIA GPU) and check the CUDA/cuDNN libraries it needs",
  },
} as const satisfies Record<string, { command: string; describe: string }>);
