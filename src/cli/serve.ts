/** `featcache serve`: the yargs face of jobs/serve; SIGTERM/SIGINT drain in-flight requests, then exit 0. */
import type { Argv } from 'yargs';
import { ExitCode } from '../errors.js';
import { DEFAULT_SERVE_OPTIONS as D } from '../jobs/defaults.js';
import { defineCommand, backboneOptions, logToStderr } from './flags.js';

export const serveCommand = defineCommand({
  command: 'serve',
  describe: 'serve a head (or a bundle) over HTTP: POST /predict, a page at /, dynamic batching',
  builder: (y: Argv) =>
    y
      .option('head', {
        type: 'string',
        default: D.head,
        describe: 'head directory written by train-head, or a bundle .onnx file',
      })
      .option('bundle', {
        type: 'string',
        describe: 'serve this bundle file (from featcache bundle) instead of --head',
      })
      .option('model', {
        type: 'string',
        describe: 'backbone ONNX file for --head (default: the one recorded in the head)',
      })
      .option('host', {
        type: 'string',
        default: D.host,
        describe: 'address to bind (0.0.0.0 exposes the server to the network)',
      })
      .option('port', { type: 'number', default: D.port, describe: 'port (0 picks a free one)' })
      .option('max-batch', { type: 'number', default: D.maxBatch, describe: 'images per inference call at most' })
      .option('max-wait-ms', {
        type: 'number',
        default: D.maxWaitMs,
        describe: 'how long the first queued image waits for others to join its batch',
      })
      .option('max-queue', {
        type: 'number',
        default: D.maxQueue,
        describe: 'requests in flight at most; more are answered 503 (back-pressure)',
      })
      .option('max-body-mb', { type: 'number', default: D.maxBodyMb, describe: 'largest upload in MiB (413 beyond)' })
      .option('max-pixels', { type: 'number', default: D.maxPixels, describe: 'largest image in pixels (413 beyond)' })
      .option('timeout-ms', {
        type: 'number',
        default: D.timeoutMs,
        describe: 'request deadline, upload and queueing included (503 beyond)',
      })
      .option('top', { type: 'number', default: D.top, describe: 'classes per answer unless the request asks ?top=N' })
      .option('device', { ...backboneOptions.device, default: D.device })
      .option('threads', { ...backboneOptions.threads, default: D.threads }),
  handler: async (a) => {
    const { serve } = await import('../jobs/serve.js');
    const handle = await serve({
      head: a.head,
      bundle: a.bundle,
      model: a.model,
      host: a.host,
      port: a.port,
      maxBatch: a['max-batch'],
      maxWaitMs: a['max-wait-ms'],
      maxQueue: a['max-queue'],
      maxBodyMb: a['max-body-mb'],
      maxPixels: a['max-pixels'],
      timeoutMs: a['timeout-ms'],
      top: a.top,
      device: a.device,
      threads: a.threads,
      log: logToStderr,
    });
    const stop = (signal: string) => {
      logToStderr(`serve: ${signal}: finishing requests in flight`);
      handle.close().then(
        () => process.exit(ExitCode.ok),
        (error: unknown) => {
          logToStderr(`serve: ${String(error)}`);
          process.exit(ExitCode.failed);
        },
      );
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
});
