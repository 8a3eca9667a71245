/** `featcache serve`: the yargs face of jobs/serve; SIGTERM/SIGINT drain in-flight requests, then exit 0. */
import type { Argv, CommandModule } from 'yargs';
import { DEFAULT_SERVE_OPTIONS, serve } from '../jobs/serve.js';
import { type Args, backboneOptions, nonNegativeInteger, parseDevice, positiveInteger } from '../commands/options.js';

const d = DEFAULT_SERVE_OPTIONS;

export const serveCommand: CommandModule = {
  command: 'serve',
  describe: 'serve a head (or a bundle) over HTTP: POST /predict, a page at /, dynamic batching',
  builder: (y: Argv) =>
    y
      .option('head', { type: 'string', default: d.head, describe: 'head directory written by train-head, or a bundle .onnx file' })
      .option('bundle', { type: 'string', describe: 'serve this bundle file (from featcache bundle) instead of --head' })
      .option('model', { type: 'string', describe: 'backbone ONNX file for --head (default: the one recorded in the head)' })
      .option('host', { type: 'string', default: d.host, describe: 'address to bind (0.0.0.0 exposes the server to the network)' })
      .option('port', { type: 'number', default: d.port, describe: 'port (0 picks a free one)' })
      .option('max-batch', { type: 'number', default: d.maxBatch, describe: 'images per inference call at most' })
      .option('max-wait-ms', { type: 'number', default: d.maxWaitMs, describe: 'how long the first queued image waits for others to join its batch' })
      .option('max-queue', { type: 'number', default: d.maxQueue, describe: 'requests in flight at most; more are answered 503 (back-pressure)' })
      .option('max-body-mb', { type: 'number', default: d.maxBodyBytes / 1024 / 1024, describe: 'largest upload in MiB (413 beyond)' })
      .option('max-pixels', { type: 'number', default: d.maxPixels, describe: 'largest image in pixels (413 beyond)' })
      .option('timeout-ms', { type: 'number', default: d.timeoutMs, describe: 'request deadline, upload and queueing included (503 beyond)' })
      .option('top', { type: 'number', default: d.top, describe: 'classes per answer unless the request asks ?top=N' })
      .option('device', { ...backboneOptions.device, default: 'cpu' })
      .option('threads', backboneOptions.threads),
  handler: async (argv) => {
    const a = argv as Args;
    const maxBodyMb = Number(a['max-body-mb']);
    if (!(maxBodyMb > 0)) throw new Error(`--max-body-mb: expected a positive number, got ${a['max-body-mb']}`);
    const log = (line: string) => process.stderr.write(`${line}\n`);
    const handle = await serve({
      head: a.head, bundle: a.bundle, model: a.model, host: a.host, port: nonNegativeInteger('--port', a.port),
      maxBatch: positiveInteger('--max-batch', a['max-batch']), maxWaitMs: nonNegativeInteger('--max-wait-ms', a['max-wait-ms']),
      maxQueue: positiveInteger('--max-queue', a['max-queue']), maxBodyBytes: Math.round(maxBodyMb * 1024 * 1024),
      maxPixels: positiveInteger('--max-pixels', a['max-pixels']), timeoutMs: positiveInteger('--timeout-ms', a['timeout-ms']),
      top: positiveInteger('--top', a.top), device: parseDevice(a.device), threads: nonNegativeInteger('--threads', a.threads), log,
    });
    const stop = (signal: string) => {
      log(`serve: ${signal}: finishing requests in flight`);
      handle.close().then(() => process.exit(0), (error: unknown) => {
        log(`serve: ${String(error)}`);
        process.exit(1);
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    try {
      await handle.ready;
    } catch (error) {
      await handle.close();
      throw error;
    }
  },
};
