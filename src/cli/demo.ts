/** `featcache demo`: the command line of the demo job (src/jobs/demo.ts). */
import type { Argv } from 'yargs';
import { DEFAULT_DEMO_OPTIONS as D } from '../jobs/defaults.js';
import { extractSummaryLine, trainSummaryLine } from './summary.js';
import { defineCommand, logToStderr } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

export const demoCommand = defineCommand({
  ...COMMAND_TEXT['demo'],
  builder: (y: Argv) =>
    y
      .option('data', {
        type: 'string',
        describe:
          'hymenoptera_data folder (default: data/hymenoptera_data or ../shared/data/hymenoptera_data, else downloaded)',
      })
      .option('model', {
        type: 'string',
        describe:
          'pretrained backbone (default: models/resnet50.onnx, fetched if missing; offline, a local pretrained model)',
      })
      .option('cache', { type: 'string', describe: 'feature cache (default: features/demo-<model name>)' })
      .option('head', { type: 'string', default: D.head, describe: 'where to save the head' })
      .option('report', { type: 'string', default: D.report, describe: 'HTML page of val predictions' })
      .option('device', { type: 'string', default: D.device })
      .option('epochs', {
        type: 'number',
        describe:
          'train a mini-batch head for this many epochs (default: the logistic-regression probe, which needs no epochs)',
      }),
  handler: async (a) => {
    const say = (line: string) => process.stdout.write(`${line}\n`);
    const { demo } = await import('../jobs/demo.js');
    const r = await demo({
      data: a.data,
      model: a.model,
      cache: a.cache,
      head: a.head,
      report: a.report,
      device: a.device,
      epochs: a.epochs,
      progress: true,
      log: logToStderr,
    });
    say(`demo: model ${r.model.file} (${r.model.why}); data ${r.data}`);
    for (const e of r.extracted) say(extractSummaryLine(e));
    say(trainSummaryLine(r.trained));
    say(`demo: predicted ${r.predicted.predictions.length} val images, ${r.wrong} wrong; open ${r.report}`);
  },
});
