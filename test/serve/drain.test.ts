/**
 * Issue 27 item 10: SIGTERM/SIGINT drain what `serve` admitted. The real CLI is spawned, requests are held in flight
 * (queued behind a batch that waits for more, or still uploading their body at a legal rate), and the signal comes
 * while they are; every admitted request must get its answer, and the exit code must say whether all were served.
 */
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { serve } from '../../src/jobs/serve.js';
import { cliPath, tempDir, writeTinyModel } from '../support/helpers.js';
import { writeTestHead } from './heads.js';

const CLASSES = ['alpha', 'beta', 'gamma'];

/** A PNG of seeded noise: it barely compresses, so its upload can be stretched over seconds. */
async function noisyPng(width: number, height: number, seed: number): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height * 3);
  let state = seed >>> 0;
  for (let i = 0; i < pixels.length; i++) {
    state = (state * 1664525 + 1013904223) >>> 0;
    pixels[i] = state >>> 24;
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

interface Served {
  child: ChildProcessWithoutNullStreams;
  url: string;
  stderr: () => string;
  /** Waits until stderr matches. */
  logged: (pattern: RegExp) => Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startCli(args: string[]): Promise<Served> {
  const child = spawn(process.execPath, [cliPath, 'serve', '--port', '0', ...args]);
  let stderr = '';
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  child.stderr.on('data', (d) => {
    stderr += d;
    for (const w of waiters.filter((w) => w.pattern.test(stderr))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  const logged = (pattern: RegExp) =>
    pattern.test(stderr)
      ? Promise.resolve()
      : Promise.race([
          new Promise<void>((resolve) => waiters.push({ pattern, resolve })),
          exited.then(({ code }) => {
            throw new Error(`serve exited (${code}) before logging ${pattern}: ${stderr}`);
          }),
        ]);
  await logged(/ready in/);
  const url = /listening on (\S+)/.exec(stderr)![1]!;
  return { child, url, stderr: () => stderr, logged, exited };
}

/**
 * POSTs `body` to /predict on a raw socket, `chunk` bytes every 100 ms (all at once when chunk is 0), and resolves with
 * the answer's status and JSON body, or status 0 when the connection closed without an answer.
 */
function upload(url: string, body: Buffer, chunk = 0): Promise<{ status: number; body: Record<string, unknown> }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    let answer = '';
    const socket = net.connect(Number(u.port), u.hostname, () => {
      socket.write(
        `POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: ${body.length}\r\n\r\n`,
      );
      if (chunk === 0) return void socket.write(body);
      let sent = 0;
      const timer = setInterval(() => {
        if (socket.destroyed || sent >= body.length) return clearInterval(timer);
        socket.write(body.subarray(sent, (sent += chunk)));
      }, 100);
      socket.on('close', () => clearInterval(timer));
    });
    socket.on('data', (d) => (answer += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
      const json = answer.slice(answer.indexOf('\r\n\r\n') + 4);
      let parsed: Record<string, unknown> = {};
      try {
        parsed = JSON.parse(json) as Record<string, unknown>;
      } catch {
        // No answer, or not JSON: the status says so.
      }
      resolve({ status, body: parsed });
    });
  });
}

async function inFlight(url: string): Promise<number> {
  return ((await (await fetch(new URL('health', url))).json()) as { inFlight: number }).inFlight;
}

async function waitForInFlight(url: string, n: number): Promise<void> {
  while ((await inFlight(url)) < n) await new Promise((r) => setTimeout(r, 20));
}

function assertAnswered(answer: { status: number; body: Record<string, unknown> }, what: string): void {
  assert.equal(answer.status, 200, `${what}: ${JSON.stringify(answer.body)}`);
  const top = answer.body.top as { label: string; probability: number }[];
  assert.equal(top.length, CLASSES.length, what);
  const sum = top.reduce((s, t) => s + t.probability, 0);
  assert.ok(Math.abs(sum - 1) < 1e-5, `${what}: probabilities sum to ${sum}`);
}

describe('serve drains on SIGTERM/SIGINT (issue 27, item 10)', () => {
  let dir: string;
  let head: string;
  let small: Buffer;
  let large: Buffer;
  before(async () => {
    dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    head = path.join(dir, 'head');
    await writeTestHead(head, { model, tappedTensor: 'pooled', dim: 3, classes: CLASSES, normalization: 'l2' });
    small = await noisyPng(40, 30, 1);
    // ~68 KB: 3 s at 24 KB/s, 34 s at 2 KB/s (both above serve's minimum upload rate of 1 KB/s).
    large = await noisyPng(150, 150, 2);
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  it(
    'SIGTERM with 5 requests in flight (3 queued, 2 still uploading): all 5 answered, new connections refused, exit 0',
    { timeout: 60_000 },
    async () => {
      // A batch waits up to a minute to fill: only the drain makes the queued requests run.
      const s = await startCli(['--head', head, '--max-wait-ms', '60000', '--max-batch', '64', '--drain-ms', '30000']);
      const queued = [0, 1, 2].map(() => upload(s.url, small));
      await waitForInFlight(s.url, 3);
      const uploading = [0, 1].map(() => upload(s.url, large, 2400));
      await waitForInFlight(s.url, 5);
      s.child.kill('SIGTERM');
      await s.logged(/SIGTERM: finishing requests in flight \(5,/);
      await s.logged(/not accepting connections; answering the 5 requests in flight \(up to 30000 ms, --drain-ms\)/);
      await assert.rejects(fetch(new URL('health', s.url)), 'a new connection during the drain is refused');
      const answers = await Promise.all([...queued, ...uploading]);
      answers.forEach((a, i) => assertAnswered(a, `request ${i}`));
      const { code } = await s.exited;
      assert.equal(code, 0, s.stderr());
      assert.match(s.stderr(), /serve: stopped/);
    },
  );

  it(
    'at the --drain-ms limit, requests still uploading get a 503 naming the limit, the rest their answer, exit 3',
    { timeout: 60_000 },
    async () => {
      const s = await startCli(['--head', head, '--max-wait-ms', '60000', '--max-batch', '64', '--drain-ms', '1500']);
      const queued = upload(s.url, small);
      await waitForInFlight(s.url, 1);
      const slow = [0, 1].map(() => upload(s.url, large, 200));
      await waitForInFlight(s.url, 3);
      s.child.kill('SIGTERM');
      assertAnswered(await queued, 'the queued request');
      for (const answer of await Promise.all(slow)) {
        assert.equal(answer.status, 503, JSON.stringify(answer.body));
        assert.match(String(answer.body.error), /shut down before answering \(drain limit --drain-ms 1500 ms\)/);
      }
      const { code } = await s.exited;
      assert.equal(code, 3, s.stderr());
      assert.match(s.stderr(), /2 of 3 requests in flight answered 503/);
    },
  );

  it(
    'a second signal during the drain answers what is left 503 and exits at once with 128 + its number',
    { timeout: 60_000 },
    async () => {
      const s = await startCli(['--head', head, '--drain-ms', '600000']);
      const slow = upload(s.url, large, 200);
      await waitForInFlight(s.url, 1);
      s.child.kill('SIGTERM');
      await s.logged(/SIGTERM: finishing requests in flight \(1,/);
      s.child.kill('SIGINT');
      const { code, signal } = await s.exited;
      assert.equal(signal, null, 'exits by itself, not killed by the signal');
      assert.equal(code, 130, s.stderr());
      assert.match(s.stderr(), /SIGINT again: exiting now; 1 requests in flight answered 503/);
      assert.equal((await slow).status, 503);
    },
  );

  it('--drain-ms must be a whole number of milliseconds', async () => {
    await assert.rejects(serve({ head, port: 0, drainMs: -1 }), /drainMs: expected an integer >= 0, got -1/);
    await assert.rejects(
      serve({ head, port: 0, drainMs: 2 ** 31 }),
      /drainMs: expected a whole number of milliseconds/,
    );
  });

  it('close() reports an incomplete drain when the limit cuts admitted requests', async () => {
    const s = await serve({ head, port: 0, maxWaitMs: 60_000, maxBatch: 64, drainMs: 0 });
    await s.ready;
    const slow = upload(s.url, large, 200);
    await waitForInFlight(s.url, 1);
    assert.equal(s.inFlight(), 1);
    const report = await s.close();
    assert.deepEqual(report, { inFlight: 1, cut: 1, complete: false });
    assert.equal((await slow).status, 503);
    await assert.rejects(fetch(new URL('health', s.url)));
  });
});
