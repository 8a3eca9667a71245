/**
 * `featcache serve`: the yargs face of jobs/serve. SIGTERM/SIGINT drain the requests in flight: exit 0 when every one
 * was answered, 3 when the --drain-ms limit cut some with a 503; a second signal answers what is left 503 and exits
 * at once with 128 + the signal's number, as a shell reports a process killed by it.
 */
import { constants } from 'node:os';
import type { Argv } from 'yargs';
import { ExitCode } from '../errors.js';
import { DEFAULT_SERVE_OPTIONS as D } from '../jobs/defaults.js';
import { defineCommand, backboneOptions, logToStderr } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

export const serveCommand = defineCommand({
  ...COMMAND_TEXT['serve'],
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
      .option('drain-ms', {
        type: 'number',
        default: D.drainMs,
        describe:
          'on SIGTERM/SIGINT, how long requests in flight get to be answered; the rest get 503 and the exit code is 3',
      })
      .option('top', { type: 'number', default: D.top, describe: 'classes per answer unless the request asks ?top=N' })
      .option('similar-split', {
        type: 'string',
        describe: 'serve POST /similar: the k nearest cached images of this split of --cache (off when absent)',
      })
      .option('cache', {
        type: 'string',
        default: D.cache,
        describe: 'feature cache holding --similar-split (extracted with the served backbone, tap and preset)',
      })
      .option('similar-k', {
        type: 'number',
        default: D.similarK,
        describe: 'neighbours per /similar answer unless the request asks ?k=N',
      })
      .option('similar-max-k', {
        type: 'number',
        default: D.similarMaxK,
        describe: 'the largest ?k a /similar request may ask for (400 beyond)',
      })
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
      drainMs: a['drain-ms'],
      top: a.top,
      cache: a.cache,
      similarSplit: a['similar-split'],
      similarK: a['similar-k'],
      similarMaxK: a['similar-max-k'],
      device: a.device,
      threads: a.threads,
      log: logToStderr,
    });
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        const cut = handle.abort();
        logToStderr(`serve: ${signal} again: exiting now; ${cut} requests in flight answered 503`);
        process.exit(128 + constants.signals[signal]);
      }
      stopping = true;
      logToStderr(
        `serve: ${signal}: finishing requests in flight (${handle.inFlight()}, up to ${a['drain-ms']} ms by --drain-ms); a second signal exits at once`,
      );
      handle.close().then(
        (report) => process.exit(report.complete ? ExitCode.ok : ExitCode.partial),
        (error: unknown) => {
          logToStderr(`serve: ${String(error)}`);
          process.exit(ExitCode.failed);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    try {
      await handle.ready;
    } catch (error) {
      await handle.close();
      throw error;
    }
  },
});
