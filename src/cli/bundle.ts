/** `featcache bundle`: the yargs face of jobs/bundle. */
import type { Argv } from 'yargs';
import { DEFAULT_BUNDLE_OPTIONS } from '../jobs/defaults.js';
import { defineCommand, emit, jsonOption, logToStderr } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

export const bundleCommand = defineCommand({
  ...COMMAND_TEXT['bundle'],
  builder: (y: Argv) =>
    y
      .option('head', {
        type: 'string',
        default: DEFAULT_BUNDLE_OPTIONS.head,
        describe: 'head directory written by train-head',
      })
      .option('out', {
        type: 'string',
        default: DEFAULT_BUNDLE_OPTIONS.out,
        describe: 'ONNX file to write (an existing file is replaced only if it is a featcache bundle)',
      })
      .option('model', {
        type: 'string',
        describe: 'backbone ONNX file (default: the one recorded in the head; checked by sha256)',
      })
      .option('json', jsonOption),
  handler: async (a) => {
    const { bundle } = await import('../jobs/bundle.js');
    const result = await bundle({ head: a.head, out: a.out, model: a.model, log: logToStderr });
    emit(
      a.json,
      { out: result.out, bytes: result.bytes, ...result.metadata },
      () =>
        `${result.out}: ${result.metadata.classes.length} classes, input "${result.metadata.preprocessing.input.name}" ${result.metadata.preprocessing.input.layout}, output "probabilities"`,
    );
  },
});
