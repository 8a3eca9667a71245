/** `featcache train-head`: the yargs builder and handler only; the work is `trainHead` in jobs/train-head.ts. */
import type { Argv, Options } from 'yargs';
import { ExitCode } from '../errors.js';
import { NORMALIZATIONS } from '../head/normalize.js';
import { BACKENDS } from '../head/runtime.js';
import { SWEEP_ENGINES } from '../head/minibatch/engine.js';
import { CLASS_WEIGHTS, MONITORS, OPTIMIZERS } from '../head/model.js';
import { DEFAULT_TRAIN_HEAD_OPTIONS as d, MINIBATCH_OPTIONS, SOLVERS } from '../jobs/defaults.js';
import type { TrainHeadOptions } from '../jobs/train-head.js';
import { defineCommand, emit, jsonOption } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';
import { trainSummaryLine } from './summary.js';
import cliProgress from 'cli-progress';

/** One bar per long stage (the scan, each epoch) with rows/s and ETA, on stderr; silent when stderr is not a TTY. */
function progressBars() {
  let bar: cliProgress.SingleBar | null = null;
  let current = '';
  let started = 0;
  return {
    update: (stage: string, done: number, total: number) => {
      if (stage !== current || !bar) {
        bar?.stop();
        current = stage;
        started = performance.now();
        bar = new cliProgress.SingleBar(
          {
            format: `train-head: ${stage} [{bar}] {percentage}% {value}/{total} rows, {rate} rows/s, ETA {eta_formatted}`,
            stream: process.stderr,
            hideCursor: false,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, 0, { rate: 0 });
      }
      const seconds = (performance.now() - started) / 1000;
      bar.update(done, { rate: seconds > 0 ? Math.round(done / seconds) : 0 });
    },
    stop: () => {
      bar?.stop();
      bar = null;
      current = '';
    },
  };
}

/** Flag → option. Only typed flags reach the job (yargs gets no defaults), so the sweep can tell them from defaults. */
const FLAGS: Record<string, keyof TrainHeadOptions> = {
  cache: 'cache',
  head: 'head',
  'train-split': 'trainSplit',
  'val-split': 'valSplit',
  'val-fraction': 'valFraction',
  epochs: 'epochs',
  'batch-size': 'batchSize',
  optimizer: 'optimizer',
  lr: 'lr',
  momentum: 'momentum',
  'weight-decay': 'weightDecay',
  'step-size': 'stepSize',
  gamma: 'gamma',
  patience: 'patience',
  monitor: 'monitor',
  'class-weight': 'classWeight',
  normalize: 'normalize',
  hidden: 'hidden',
  seed: 'seed',
  backend: 'backend',
  sweep: 'sweep',
  'holdout-fraction': 'holdoutFraction',
  'sweep-engine': 'sweepEngine',
  solver: 'solver',
  memory: 'memory',
};

const flagOf = (key: string) => Object.keys(FLAGS).find((f) => FLAGS[f] === key)!;

const swept = ' (swept unless given)';

/** No yargs `default`: an absent flag stays undefined and the job's default applies; --help shows it. */
const option = (
  type: 'string' | 'number' | 'boolean',
  shown: string | number | boolean | null,
  describe: string,
  extra: Options = {},
): Options => ({ type, describe, defaultDescription: shown === null ? 'none' : String(shown), ...extra });

export const trainHeadCommand = defineCommand({
  ...COMMAND_TEXT['train-head'],
  builder: (y: Argv) =>
    y
      .option('cache', option('string', d.cache, 'feature cache directory'))
      .option(
        'head',
        option('string', d.head, 'directory to write the head to (new, empty, or a head featcache wrote)'),
      )
      .option('train-split', option('string', d.trainSplit, 'cached split to train on'))
      .option(
        'val-split',
        option('string', d.valSplit, 'cached split to report on (if present); it never selects anything after a sweep'),
      )
      .option(
        'val-fraction',
        option('number', d.valFraction, 'validate on a stratified fraction of the train split instead'),
      )
      .option(
        'solver',
        option(
          'string',
          d.solver,
          `lbfgs: logistic regression solved to convergence (C swept: ${d.grid.c.join(', ')}); minibatch: epochs of Adam/SGD (lr, weight decay, epochs swept); stream: C and normalisation swept on a stratified subsample, the final fit streamed from the cache within --memory; auto: lbfgs unless --hidden, --no-sweep or one of ${MINIBATCH_OPTIONS.map((k) => `--${flagOf(k)}`).join(', ')} is given, stream when the cache is too large for lbfgs (the log says why)`,
          { choices: [...SOLVERS] },
        ),
      )
      .option(
        'sweep',
        option(
          'boolean',
          d.sweep,
          'choose the setting on a hold-out (or folds) of train; --no-sweep trains the given setting once',
        ),
      )
      .option(
        'holdout-fraction',
        option('number', d.holdoutFraction, 'share of train held out for the sweep and the temperature'),
      )
      .option('epochs', option('number', `${d.epochs}; sweep: best of up to ${d.sweepEpochs}`, `epochs${swept}`))
      .option('batch-size', option('number', d.batchSize, 'mini-batch size'))
      .option('optimizer', option('string', d.optimizer, 'optimiser', { choices: [...OPTIMIZERS] }))
      .option('lr', option('number', `${d.lr}; sweep: ${d.grid.lr.join(', ')}`, `learning rate${swept}`))
      .option('momentum', option('number', d.momentum, 'SGD momentum (PyTorch semantics)'))
      .option(
        'weight-decay',
        option(
          'number',
          `lbfgs: swept as C ${d.grid.c.join(', ')}; minibatch: ${d.weightDecay}, swept ${d.grid.weightDecay.join(', ')}`,
          `L2 penalty: λ = 1/(C·n) (lbfgs), PyTorch weight_decay (minibatch)${swept}`,
        ),
      )
      .option('step-size', option('number', d.stepSize, 'StepLR: decay the learning rate every N epochs (0 = off)'))
      .option('gamma', option('number', d.gamma, 'StepLR decay factor'))
      .option(
        'patience',
        option('number', d.patience, 'early stopping with --no-sweep: epochs without improvement (0 = off)'),
      )
      .option(
        'monitor',
        option(
          'string',
          d.monitor,
          'what selects: the best epoch (--no-sweep, on val) or the sweep candidate (on the hold-out)',
          { choices: [...MONITORS] },
        ),
      )
      .option(
        'class-weight',
        option('string', d.classWeight, 'class weights in the loss', { choices: [...CLASS_WEIGHTS] }),
      )
      .option(
        'normalize',
        option(
          'string',
          `${d.normalize}; sweep: ${d.grid.normalize.join(', ')}`,
          `feature normalisation, statistics from train, saved with the head${swept}`,
          { choices: [...NORMALIZATIONS] },
        ),
      )
      .option('hidden', option('number', d.hidden, 'units of an optional ReLU hidden layer (0 = none)'))
      .option(
        'seed',
        option('number', d.seed, 'seed for the hold-out, initialisation and shuffling (same seed, same head)'),
      )
      .option(
        'backend',
        option('string', d.backend, 'TensorFlow.js backend (auto: tensorflow, then wasm, then cpu)', {
          choices: [...BACKENDS],
        }),
      )
      .option(
        'sweep-engine',
        option('string', d.sweepEngine, "engine of the sweep's wide pass (auto: tfjs on tfjs-node, else onnxruntime)", {
          choices: [...SWEEP_ENGINES],
        }),
      )
      .option(
        'memory',
        option(
          'number',
          d.memory,
          'memory budget in MB: auto streams above it, and streaming keeps peak RSS within it',
        ),
      )
      .option('json', jsonOption),
  handler: async (a) => {
    const given: Partial<TrainHeadOptions> = {};
    for (const [flag, key] of Object.entries(FLAGS))
      if (a[flag] !== undefined) (given as Record<string, unknown>)[key] = a[flag];
    const bars = a.json ? null : progressBars();
    const log = a.json
      ? undefined
      : (line: string) => {
          bars?.stop();
          process.stderr.write(`${line}\n`);
        };
    // Ctrl-C stops at the next batch; the head is written only at the very end (atomically), so nothing is half-written.
    const controller = new AbortController();
    const onSigint = () => {
      controller.abort();
      // Stages without an abort check (the in-memory sweep) are not waited for: nothing is written before the end.
      setTimeout(() => {
        process.stderr.write('train-head: interrupted; nothing was written (the previous head, if any, is intact)\n');
        process.exit(ExitCode.interrupted);
      }, 2000).unref();
    };
    process.once('SIGINT', onSigint);
    try {
      const { trainHead } = await import('../jobs/train-head.js');
      const result = await trainHead({ ...given, log, progress: bars?.update, signal: controller.signal });
      bars?.stop();
      emit(a.json, result, () => trainSummaryLine(result));
    } finally {
      bars?.stop();
      process.removeListener('SIGINT', onSigint);
    }
  },
});
