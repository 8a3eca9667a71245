import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { predict } from '../../src/jobs/predict.js';
import { bundle } from '../../src/jobs/bundle.js';
import { type ServeHandle, serve } from '../../src/jobs/serve.js';
import { cliPath, pngBomb, tempDir, writeImage, writeTinyModel } from '../support/helpers.js';
import { writeTestHead } from './heads.js';

const CLASSES = ['alpha', 'beta', 'gamma'];

interface Answer {
  status: number;
  body: {
    top?: { label: string; probability: number }[];
    error?: string;
    model?: Record<string, unknown>;
    timing?: { batchSize: number };
  };
}

async function post(
  url: string,
  body: Uint8Array | FormData,
  headers: Record<string, string> = {},
  query = '',
): Promise<Answer> {
  const response = await fetch(new URL(`predict${query}`, url), { method: 'POST', body: body as BodyInit, headers });
  return { status: response.status, body: await response.json() };
}

/** predict()'s answer for each file: the independent reference (TF.js head, file decoding) for the server's. */
async function expectedTop(files: string[], head: string): Promise<Map<string, Map<string, number>>> {
  const result = await predict({
    inputs: files,
    head,
    top: CLASSES.length,
    batchSize: 8,
    device: 'cpu',
    threads: 1,
    backend: 'cpu',
  });
  return new Map(result.predictions.map((p) => [p.path, new Map(p.top.map((t) => [t.label, t.probability]))]));
}

function assertMatches(answer: Answer, expected: Map<string, number>, what: string): void {
  assert.equal(answer.status, 200, `${what}: ${JSON.stringify(answer.body)}`);
  const top = answer.body.top!;
  assert.equal(top.length, CLASSES.length);
  for (const t of top)
    assert.ok(
      Math.abs(t.probability - expected.get(t.label)!) < 1e-5,
      `${what}: ${t.label} ${t.probability} vs ${expected.get(t.label)}`,
    );
  for (let i = 1; i < top.length; i++) assert.ok(top[i - 1]!.probability >= top[i]!.probability, 'sorted');
}

describe('serve (tiny backbone)', () => {
  let dir: string;
  let head: string;
  let files: string[];
  let expected: Map<string, Map<string, number>>;
  let server: ServeHandle;
  before(async () => {
    dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    head = path.join(dir, 'head');
    await writeTestHead(head, {
      model,
      tappedTensor: 'pooled',
      dim: 3,
      classes: CLASSES,
      normalization: 'standard',
      hidden: 6,
      scale: 2,
    });
    files = [];
    for (let i = 0; i < 8; i++) {
      const f = path.join(dir, `img${i}.${i % 2 ? 'png' : 'jpg'}`);
      await writeImage(f, i * 17 + 3, { format: i % 2 ? 'png' : 'jpeg', width: 50 + 9 * i, height: 40 + 5 * i });
      files.push(f);
    }
    expected = await expectedTop(files, head);
    server = await serve({ head, port: 0, maxBatch: 4, maxWaitMs: 2000, maxBodyMb: 0.2, maxPixels: 4_000_000, top: 3 });
    await server.ready;
  });
  after(async () => {
    await server?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('binds to 127.0.0.1 by default and reports readiness and health', async () => {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const ready = await fetch(new URL('ready', server.url));
    assert.equal(ready.status, 200);
    const health = await (await fetch(new URL('health', server.url))).json();
    assert.equal(health.status, 'ok');
    assert.equal(health.ready, true);
    const info = await (await fetch(new URL('model', server.url))).json();
    assert.deepEqual(info.classes, CLASSES);
    assert.equal(info.preprocessing.preset.crop, 224);
  });

  it("answers concurrent raw and multipart uploads with predict's probabilities, batched together, each with its own result", async () => {
    const answers = await Promise.all(
      files
        .slice(0, 4)
        .map(async (f) =>
          post(server.url, await fs.readFile(f), { 'content-type': f.endsWith('png') ? 'image/png' : 'image/jpeg' }),
        ),
    );
    answers.forEach((a, i) => assertMatches(a, expected.get(files[i]!)!, files[i]!));
    // maxWaitMs is 2 s and maxBatch 4: four concurrent requests fill one batch.
    assert.ok(
      answers.some((a) => a.body.timing!.batchSize > 1),
      `batch sizes ${answers.map((a) => a.body.timing!.batchSize).join(',')}`,
    );
    assert.match(String(answers[0]!.body.model!.backboneSha256), /^[0-9a-f]{64}$/);
    assert.match(String(answers[0]!.body.model!.headId), /^[0-9a-f]{64}$/);
    const forms = await Promise.all(
      files.slice(4).map(async (f) => {
        const form = new FormData();
        form.append('note', 'ignored');
        form.append('image', new Blob([await fs.readFile(f)]), path.basename(f));
        return post(server.url, form);
      }),
    );
    forms.forEach((a, i) => assertMatches(a, expected.get(files[i + 4]!)!, `multipart ${files[i + 4]}`));
  });

  it('answers ?top=N, and refuses a bad top', async () => {
    const bytes = await fs.readFile(files[0]!);
    const two = await post(server.url, bytes, {}, '?top=2');
    assert.equal(two.body.top!.length, 2);
    const bad = await post(server.url, bytes, {}, '?top=zero');
    assert.equal(bad.status, 400);
    assert.match(bad.body.error!, /top: expected a positive integer/);
  });

  it('answers bad input with a 4xx JSON error naming the problem', async () => {
    const png = await fs.readFile(files[1]!);
    const jpeg = await fs.readFile(files[0]!);
    const cases: [string, Promise<Answer>, number, RegExp][] = [
      [
        'text',
        post(server.url, Buffer.from('hello, not an image'), { 'content-type': 'text/plain' }),
        400,
        /not an image/,
      ],
      ['json', post(server.url, Buffer.from('{"a":1}'), { 'content-type': 'application/json' }), 400, /not an image/],
      [
        'truncated png',
        post(server.url, png.subarray(0, Math.floor(png.length / 2)), { 'content-type': 'image/png' }),
        400,
        /truncated or corrupt|could not be decoded/,
      ],
      [
        'truncated jpeg',
        post(server.url, jpeg.subarray(0, Math.floor(jpeg.length / 2)), { 'content-type': 'image/jpeg' }),
        400,
        /truncated or corrupt|could not be decoded/,
      ],
      ['empty', post(server.url, new Uint8Array(), { 'content-type': 'image/png' }), 400, /body is empty/],
      [
        'too large',
        post(server.url, new Uint8Array(300_000), { 'content-type': 'image/png' }),
        413,
        /larger than 209715 bytes \(maxBodyMb\)/,
      ],
      [
        'too many pixels',
        post(server.url, pngBomb(5000, 5000), { 'content-type': 'image/png' }),
        413,
        /more than 4000000 pixels/,
      ],
      [
        'form without file',
        (() => {
          const f = new FormData();
          f.append('x', 'y');
          return post(server.url, f);
        })(),
        400,
        /no file part/,
      ],
    ];
    for (const [what, answer, status, pattern] of cases) {
      const a = await answer;
      assert.equal(a.status, status, `${what}: ${JSON.stringify(a.body)}`);
      assert.match(a.body.error!, pattern, what);
    }
    const missing = await fetch(new URL('nope', server.url));
    assert.equal(missing.status, 404);
    assert.match((await missing.json()).error, /no route GET \/nope/);
    assert.equal((await fetch(new URL('health', server.url))).status, 200, 'still up');
  });

  it('soak (bounded): 200 requests, 20% malformed, 8 at a time: good ones correct, bad ones 4xx, server healthy', async () => {
    const good = await Promise.all(files.map((f) => fs.readFile(f)));
    let index = 0;
    const failures: string[] = [];
    const worker = async () => {
      while (index < 200) {
        const i = index++;
        const bad = i % 5 === 0;
        const which = i % files.length;
        const body = bad ? (i % 10 === 0 ? good[which]!.subarray(0, 40) : Buffer.from(`junk ${i}`)) : good[which]!;
        const a = await post(server.url, body, { 'content-type': 'application/octet-stream' });
        if (bad) {
          if (a.status < 400 || a.status >= 500) failures.push(`bad #${i}: ${a.status}`);
        } else {
          try {
            assertMatches(a, expected.get(files[which]!)!, `good #${i}`);
          } catch (error) {
            failures.push(String(error));
          }
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    assert.deepEqual(failures, []);
    const health = await (await fetch(new URL('health', server.url))).json();
    assert.equal(health.inFlight, 0);
  });
});

describe('serve: readiness, back-pressure, draining', () => {
  let dir: string;
  let head: string;
  let image: Buffer;
  before(async () => {
    dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    head = path.join(dir, 'head');
    await writeTestHead(head, { model, tappedTensor: 'pooled', dim: 3, classes: CLASSES, normalization: 'l2' });
    await writeImage(path.join(dir, 'a.png'), 5, { format: 'png' });
    image = await fs.readFile(path.join(dir, 'a.png'));
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  it('stays up and not ready when the model cannot load, saying why', async () => {
    const broken = path.join(dir, 'broken-head');
    await fs.cp(head, broken, { recursive: true });
    const info = JSON.parse(await fs.readFile(path.join(broken, 'head.json'), 'utf8'));
    info.provenance.modelFile = path.join(dir, 'gone.onnx');
    await fs.writeFile(path.join(broken, 'head.json'), JSON.stringify(info));
    const s = await serve({ head: broken, port: 0 });
    await assert.rejects(s.ready, /gone\.onnx not found/);
    const ready = await fetch(new URL('ready', s.url));
    assert.equal(ready.status, 503);
    const a = await post(s.url, image);
    assert.equal(a.status, 503);
    assert.match(a.body.error!, /failed to load/);
    await s.close();
  });

  it('serves a bundle file; a full server answers 503, and close() answers what was admitted before stopping', async () => {
    const file = path.join(dir, 'c.onnx');
    await bundle({ head, out: file });
    const s = await serve({ bundle: file, port: 0, maxQueue: 1, maxBatch: 8, maxWaitMs: 60_000 });
    await s.ready;
    const first = post(s.url, image);
    // The first request is admitted and waits for a batch that will not fill; the second finds the server full.
    let second: Answer;
    for (;;) {
      second = await post(s.url, image);
      if (second.status === 503) break;
    }
    assert.match(second.body.error!, /busy/);
    await s.close();
    const answered = await first;
    assert.equal(answered.status, 200);
    assert.equal(answered.body.top!.length, 3);
    await assert.rejects(fetch(new URL('health', s.url)));
  });

  it('a client that hangs up mid-upload gives its slot back (no leaked admissions), and a form without a boundary is a 400', async () => {
    const s = await serve({ head, port: 0, maxQueue: 2 });
    await s.ready;
    try {
      const u = new URL(s.url);
      for (let i = 0; i < 4; i++) {
        await new Promise<void>((resolve) => {
          const socket = net.connect(Number(u.port), u.hostname, () => {
            socket.write(
              'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n',
            );
            socket.write(image.subarray(0, 50), () => setTimeout(() => socket.destroy(), 50));
          });
          socket.on('close', () => resolve());
          socket.on('error', () => {});
        });
      }
      let health = await (await fetch(new URL('health', s.url))).json();
      for (let tries = 0; health.inFlight !== 0 && tries < 50; tries++) {
        await new Promise((r) => setTimeout(r, 20));
        health = await (await fetch(new URL('health', s.url))).json();
      }
      assert.equal(health.inFlight, 0);
      assert.equal((await post(s.url, image)).status, 200);
      const noBoundary = await post(s.url, Buffer.from('hello'), { 'content-type': 'multipart/form-data' });
      assert.equal(noBoundary.status, 400);
      assert.match(noBoundary.body.error!, /multipart body is malformed/);
    } finally {
      await s.close();
    }
  });

  it('the CLI drains in-flight requests on SIGTERM and exits 0', async () => {
    const child = spawn(process.execPath, [
      cliPath,
      'serve',
      '--head',
      head,
      '--port',
      '0',
      '--max-wait-ms',
      '1500',
      '--max-batch',
      '8',
    ]);
    let stderr = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (d) => {
        stderr += d;
        const m = /ready in/.test(stderr) && /listening on (\S+)/.exec(stderr);
        if (m) resolve(m[1]!);
      });
      child.on('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const inFlight = post(url, image);
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGTERM');
    const answer = await inFlight;
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /SIGTERM: finishing requests in flight/);
  });
});
