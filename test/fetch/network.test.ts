/**
 * Network conditions on 127.0.0.1: servers that accept and then go silent, a TLS port that never answers, a forward
 * proxy (CONNECT and plain HTTP), and mirrors that fail in different ways. Timeouts are short via options.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { download } from '../../src/fetch/download.js';
import { MODEL_SOURCES } from '../../src/fetch/registry.js';
import { fetchModel } from '../../src/jobs/fetch-model.js';
import { runCli, tempDir, tinyModel } from '../support/helpers.js';

const fast = { connectTimeoutMs: 300, stallTimeoutMs: 300, retryDelayMs: 10 };

type Mode = 'ok' | 'silent' | 'stall-midway' | '404' | 'html';

/** A file server whose path picks its behaviour; counts requests per mode and remembers Range headers. */
async function startServer(payload: Buffer) {
  const hits: { mode: Mode; range: string | undefined }[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const mode = (req.url ?? '/ok').slice(1).split('?')[0] as Mode;
    hits.push({ mode, range: req.headers.range });
    if (mode === 'silent') return; // accepted, never answers
    if (mode === '404') return void res.writeHead(404).end('no such model');
    if (mode === 'html')
      return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html>LFS quota exceeded</html>');
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    const body = payload.subarray(start);
    res.writeHead(start > 0 ? 206 : 200, {
      'content-length': body.length,
      ...(start > 0 ? { 'content-range': `bytes ${start}-${payload.length - 1}/${payload.length}` } : {}),
    });
    // stall-midway: the first answer sends a third of the bytes and then nothing, keeping the connection open.
    if (mode === 'stall-midway' && hits.filter((h) => h.mode === 'stall-midway').length === 1)
      return void res.write(body.subarray(0, Math.floor(body.length / 3)));
    res.end(body);
  });
  server.on('connection', (s) => (sockets.add(s), s.on('close', () => sockets.delete(s))));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: (mode: Mode) => `http://127.0.0.1:${port}/${mode}`,
    hits,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A TCP port that accepts connections and never says a word: TLS handshakes to it never finish. */
async function startBlackHole() {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => (sockets.add(s), s.on('error', () => {})));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A forward proxy: tunnels CONNECT and relays absolute-URI requests, recording what it was asked for. */
async function startProxy() {
  const seen: string[] = [];
  const sockets = new Set<{ destroy(): void }>();
  const proxy = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const target = new URL(req.url ?? '');
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname + target.search,
        method: req.method,
        headers: req.headers,
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  proxy.on('connect', (req, client, head) => {
    seen.push(`CONNECT ${req.url}`);
    const [host, port] = (req.url ?? '').split(':');
    const upstream = net.connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    for (const s of [upstream, client]) {
      sockets.add(s);
      s.on('error', () => {});
    }
  });
  proxy.on('connection', (s) => sockets.add(s));
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`,
    seen,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => proxy.close(() => r()));
    },
  };
}

describe('download timeouts, proxy and mirrors', () => {
  const payload = Buffer.from(tinyModel({ size: 8 }));
  const sha256 = createHash('sha256').update(payload).digest('hex');
  let server: Awaited<ReturnType<typeof startServer>>;
  let hole: Awaited<ReturnType<typeof startBlackHole>>;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  before(async () => {
    [server, hole, proxy] = await Promise.all([startServer(payload), startBlackHole(), startProxy()]);
  });
  after(async () => {
    await Promise.all([server.close(), hole.close(), proxy.close()]);
  });

  it('retries a server that accepts and goes silent, then gives up with the reason', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    const before = server.hits.length;
    await assert.rejects(
      download({ url: server.url('silent'), dest, retries: 1, ...fast }),
      /download incomplete after 2 attempts \(no bytes received for 0\.3 s \(stalled\)\)/,
    );
    assert.equal(server.hits.length - before, 2);
    assert.ok(!existsSync(dest));
    assert.deepEqual(await fs.readdir(path.dirname(dest)), [], 'no empty .part or .source left');
  });

  it('a transfer that stalls midway is retried and resumed with a Range request', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    const r = await download({ url: server.url('stall-midway'), dest, sha256, retries: 2, ...fast });
    assert.equal(r.attempts, 2);
    assert.deepEqual(await fs.readFile(dest), payload);
    assert.match(server.hits.filter((h) => h.mode === 'stall-midway').at(-1)!.range!, /^bytes=\d+-$/);
  });

  it('gives up on a connection (TLS handshake) that never completes, naming the connect timeout', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    await assert.rejects(
      download({
        url: `https://127.0.0.1:${hole.port}/m.onnx`,
        dest,
        retries: 0,
        ...fast,
        connectTimeoutMs: 200,
        stallTimeoutMs: 5000,
      }),
      /incomplete after 1 attempts \(.*Connect Timeout Error.*timeout: 200ms.*\)/,
    );
  });

  it('goes through HTTP(S)_PROXY, and straight to hosts NO_PROXY names', async () => {
    const dest = path.join(await tempDir(), 'm.onnx');
    await download({
      url: server.url('ok'),
      dest,
      sha256,
      ...fast,
      proxy: { httpProxy: proxy.url, httpsProxy: proxy.url, noProxy: '' },
    });
    assert.deepEqual(await fs.readFile(dest), payload);
    const host = new URL(server.url('ok')).host;
    assert.ok(
      proxy.seen.some((s) => s === `CONNECT ${host}` || s === `GET ${server.url('ok')}`),
      proxy.seen.join('\n'),
    );
    const seen = proxy.seen.length;
    await download({
      url: server.url('ok'),
      dest: path.join(await tempDir(), 'm.onnx'),
      ...fast,
      proxy: { httpProxy: proxy.url, noProxy: '127.0.0.1' },
    });
    assert.equal(proxy.seen.length, seen);
  });

  it('the CLI honours HTTP_PROXY from the environment', async () => {
    const dir = await tempDir();
    const seen = proxy.seen.length;
    const r = await runCli(
      ['fetch-model', 'tiny', '--dir', dir, '--url', server.url('ok'), '--sha256', sha256, '--json'],
      { env: { HTTP_PROXY: proxy.url, http_proxy: proxy.url, NO_PROXY: '', no_proxy: '' } },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.ok(proxy.seen.length > seen);
  });

  it('falls back from mirror to mirror and lists why each failed', async () => {
    const dir = await tempDir();
    const lines: string[] = [];
    const urls = [server.url('404'), server.url('silent'), server.url('ok')];
    const r = await fetchModel({ name: 'tiny', dir, urls, retries: 0, ...fast, log: (l) => lines.push(l) });
    assert.equal(r.status, 'downloaded');
    assert.equal(r.source, urls[2]);
    assert.equal(r.failedSources.length, 2);
    assert.match(r.failedSources[0]!, /\/404: HTTP 404 Not Found$/);
    assert.match(
      r.failedSources[1]!,
      /\/silent: download incomplete after 1 attempts \(no bytes received for 0\.3 s \(stalled\)\)/,
    );
    assert.equal(lines.length, 2);
    assert.deepEqual(await fs.readFile(path.join(dir, 'tiny.onnx')), payload);
  });

  it('when every source fails, one error names each source and its reason, and nothing is left behind', async () => {
    const dir = await tempDir();
    const urls = [server.url('html'), server.url('404')];
    await assert.rejects(fetchModel({ name: 'tiny', dir, urls, retries: 0, ...fast }), (e: Error) => {
      assert.match(
        e.message,
        /^fetch-model tiny: every source failed: \(1\) .*\/html.*not a usable backbone.* \(2\) .*\/404: HTTP 404 Not Found — behind a proxy, set HTTPS_PROXY/,
      );
      assert.ok(!e.message.includes('\n'));
      return true;
    });
    assert.deepEqual(await fs.readdir(dir), []);
  });

  it('the registry tries the Hugging Face mirror before github.com/onnx/models', () => {
    for (const source of Object.values(MODEL_SOURCES)) {
      assert.match(source.urls[0]!, /^https:\/\/huggingface\.co\/onnxmodelzoo\//);
      assert.match(source.urls.at(-1)!, /^https:\/\/github\.com\/onnx\/models\//);
    }
  });
});
