import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { download } from '../../src/fetch/download.js';
import { runCli, tempDir, tinyModel } from '../support/helpers.js';

type Mode = 'ok' | 'drop' | 'corrupt' | 'no-range';

/** A file server on 127.0.0.1 that honours Range and can drop a connection midway or serve corrupt bytes. */
function startServer(payload: Buffer) {
  const requests: { url: string; range: string | undefined }[] = [];
  let dropsLeft = 0;
  const server = http.createServer((req, res) => {
    const mode = (new URL(req.url ?? '/', 'http://x').searchParams.get('mode') ?? 'ok') as Mode;
    requests.push({ url: req.url ?? '', range: req.headers.range });
    let body = mode === 'corrupt' ? Buffer.from(payload.map((b, i) => (i === 100 ? b ^ 0xff : b))) : payload;
    const match = mode !== 'no-range' ? /^bytes=(\d+)-$/.exec(req.headers.range ?? '') : null;
    let status = 200;
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      'accept-ranges': 'bytes',
    };
    if (match) {
      const start = Number(match[1]);
      status = 206;
      headers['content-range'] = `bytes ${start}-${body.length - 1}/${body.length}`;
      body = body.subarray(start);
    }
    headers['content-length'] = body.length;
    res.writeHead(status, headers);
    if (mode === 'drop' && dropsLeft > 0) {
      dropsLeft--;
      res.write(body.subarray(0, Math.floor(body.length / 3)), () => res.socket?.destroy());
      return;
    }
    res.end(body);
  });
  return new Promise<{
    url: (mode?: Mode) => string;
    requests: typeof requests;
    setDrops: (n: number) => void;
    close: () => Promise<void>;
  }>((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port;
      resolve({
        url: (mode = 'ok') => `http://127.0.0.1:${port}/model.onnx?mode=${mode}`,
        requests,
        setDrops: (n) => (dropsLeft = n),
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}

/** Starts a server for the enclosing suite; tests call server.url() etc. once `before` has run. */
function servedDuringSuite(payload: Buffer) {
  let running: Awaited<ReturnType<typeof startServer>>;
  before(async () => {
    running = await startServer(payload);
  });
  after(() => running.close());
  return {
    url: (mode?: Mode) => running.url(mode),
    get requests() {
      return running.requests;
    },
    setDrops: (n: number) => running.setDrops(n),
  };
}

describe('download', () => {
  // Large enough that a connection dropped a third of the way in has delivered bytes.
  const payload = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251));
  const sha256 = createHash('sha256').update(payload).digest('hex');
  const server = servedDuringSuite(payload);

  it('downloads, verifies size and sha256, and renames into place', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    const r = await download({ url: server.url(), dest, sha256, size: payload.length });
    assert.equal(r.sha256, sha256);
    assert.deepEqual(await fs.readFile(dest), payload);
    assert.ok(!existsSync(`${dest}.part`));
  });

  it('resumes after the connection drops midway, with a Range request', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    server.setDrops(2);
    const before = server.requests.length;
    const r = await download({ url: server.url('drop'), dest, sha256, retries: 3 });
    assert.equal(r.attempts, 3);
    assert.deepEqual(await fs.readFile(dest), payload);
    const ranges = server.requests.slice(before).map((q) => q.range);
    assert.equal(ranges[0], undefined);
    assert.match(ranges[1]!, /^bytes=\d+-$/);
  });

  it('resumes a partial file left by an earlier run', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    await fs.writeFile(`${dest}.part`, payload.subarray(0, 500));
    const r = await download({ url: server.url(), dest, sha256 });
    assert.equal(r.resumedFrom, 500);
    assert.equal(server.requests.at(-1)!.range, 'bytes=500-');
    assert.deepEqual(await fs.readFile(dest), payload);
  });

  it('starts over when the server ignores Range', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    await fs.writeFile(`${dest}.part`, Buffer.alloc(300, 7));
    await download({ url: server.url('no-range'), dest, sha256 });
    assert.deepEqual(await fs.readFile(dest), payload);
  });

  it('rejects corrupt bytes, removes them, and never creates the final file', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    await assert.rejects(
      download({ url: server.url('corrupt'), dest, sha256 }),
      /downloaded file is corrupt \(sha256 [0-9a-f]{64}, expected/,
    );
    assert.ok(!existsSync(dest));
    assert.ok(!existsSync(`${dest}.part`));
  });

  it('gives up after the retries, keeping the partial file for the next run', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    server.setDrops(10);
    await assert.rejects(
      download({ url: server.url('drop'), dest, sha256, retries: 1 }),
      /download incomplete after 2 attempts .* is kept — re-run to resume/,
    );
    assert.ok(!existsSync(dest));
    assert.ok(existsSync(`${dest}.part`));
    server.setDrops(0);
    await download({ url: server.url(), dest, sha256 });
    assert.deepEqual(await fs.readFile(dest), payload);
  });
});

describe('featcache fetch-model against 127.0.0.1', () => {
  const payload = Buffer.from(tinyModel({ size: 8 }));
  const sha256 = createHash('sha256').update(payload).digest('hex');
  const server = servedDuringSuite(payload);

  it('downloads with --sha256, checks the graph is a backbone, and reports a present file the second time', async () => {
    const dir = await tempDir();
    const r = await runCli([
      'fetch-model',
      'resnet50',
      '--dir',
      dir,
      '--url',
      server.url(),
      '--sha256',
      sha256,
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.status, 'downloaded');
    assert.equal(result.verifiedBy, 'given sha256');
    assert.equal(result.tap, 'pooled');
    assert.deepEqual(await fs.readFile(path.join(dir, 'resnet50.onnx')), payload);
    const again = JSON.parse((await runCli(['fetch-model', 'resnet50', '--dir', dir, '--json'])).stdout);
    assert.equal(again.status, 'present');
    assert.equal(again.sha256, sha256);
  });

  it('pins an unknown checksum on first download and refuses a changed file later', async () => {
    const dir = await tempDir();
    const first = JSON.parse(
      (await runCli(['fetch-model', 'resnet50', '--dir', dir, '--url', server.url(), '--json'])).stdout,
    );
    assert.equal(first.verifiedBy, 'pinned now (first download)');
    assert.match(
      await fs.readFile(path.join(dir, 'resnet50.onnx.sha256'), 'utf8'),
      new RegExp(`^${sha256}  resnet50.onnx`),
    );
    await fs.appendFile(path.join(dir, 'resnet50.onnx'), 'tampered');
    const r = await runCli(['fetch-model', 'resnet50', '--dir', dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /exists but its sha256 .* is not the expected/);
  });

  it('refuses a corrupt payload and an unknown model name in one line', async () => {
    const dir = await tempDir();
    const r = await runCli([
      'fetch-model',
      'resnet50',
      '--dir',
      dir,
      '--url',
      server.url('corrupt'),
      '--sha256',
      sha256,
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr.trim(),
      /^featcache: http:\/\/127\.0\.0\.1:\d+\/model\.onnx\?mode=corrupt: downloaded file is corrupt/,
    );
    assert.deepEqual(await fs.readdir(dir), []);
    const unknown = await runCli(['fetch-model', 'vgg99', '--dir', dir]);
    assert.equal(unknown.code, 2);
    assert.equal(
      unknown.stderr.trim(),
      'featcache: <name>: expected one of "resnet50", "mobilenetv2-int8", or any name with --url, got "vgg99"',
    );
  });

  it('refuses a download that is not an ONNX backbone', async () => {
    const dir = await tempDir();
    const text = http.createServer((_, res) => res.end('<html>not a model</html>'));
    await new Promise<void>((r) => text.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(text.address() as AddressInfo).port}/x.onnx`;
    const r = await runCli(['fetch-model', 'resnet50', '--dir', dir, '--url', url]);
    text.close();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /downloaded, but not a usable backbone/);
    assert.ok(!existsSync(path.join(dir, 'resnet50.onnx')));
  });
});
