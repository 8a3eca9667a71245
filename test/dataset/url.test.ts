import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Item, openDataset } from '../../src/dataset/index.js';
import { FetchError, UrlSource, parseRetryAfter } from '../../src/dataset/url.js';
import { type ExtractOptions, extract } from '../../src/jobs/extract.js';
import { ExitCode } from '../../src/errors.js';
import { FeatureCache } from '../../src/store/reader.js';
import { type FlakyServer, startFlakyServer } from '../support/flaky-server.js';
import { runCli, tempDir, writeColourFolder, writeImage, writeTinyModel } from '../support/helpers.js';

const fast = { timeoutMs: 2000, retries: 2, backoffMs: 5, maxBackoffMs: 50 };

type Outcome =
  | { bytes: Buffer; stamp: { size: number; mtimeMs: number } }
  | { failure: { message: string; status: number | undefined } };

/** Reads every URL concurrently, as a batch does; a failure is kept with its message and status. */
async function readAll(source: UrlSource, urls: string[]): Promise<Map<string, Outcome>> {
  const items = urls.map((path): Item => ({ path, label: null }));
  const outcomes = await Promise.all(
    items.map((item) =>
      source.read(item).catch((error: FetchError): Outcome => {
        assert.ok(error instanceof FetchError, String(error));
        return { failure: { message: error.message, status: error.status } };
      }),
    ),
  );
  return new Map(urls.map((u, i) => [u, outcomes[i]!]));
}

describe('UrlSource against a misbehaving local server', () => {
  let server: FlakyServer;
  const files = new Map<string, Buffer>();
  before(async () => {
    server = await startFlakyServer();
    const dir = await tempDir();
    for (let i = 0; i < 12; i++) {
      const file = path.join(dir, `${i}.jpg`);
      await writeImage(file, i);
      const bytes = await fs.readFile(file);
      files.set(`${i}.jpg`, bytes);
      server.images.set(`${i}.jpg`, bytes);
    }
  });
  after(() => server.close());

  it('fetches every image byte for byte, with a constant stamp (a cached URL is never fetched again)', async () => {
    const source = new UrlSource(fast);
    const urls = [...files.keys()].map((n) => `${server.base}/img/${n}`);
    const out = await readAll(source, urls);
    await source.close();
    assert.equal(out.size, urls.length);
    for (const [name, bytes] of files) {
      const outcome = out.get(`${server.base}/img/${name}`)!;
      assert.ok('bytes' in outcome, JSON.stringify(outcome));
      assert.ok(outcome.bytes.equals(bytes));
      assert.deepEqual(outcome.stamp, await source.stamp());
    }
    assert.equal(server.started, urls.length, 'each URL fetched once');
  });

  it('retries 5xx, 429 and dropped connections, and not 404', async () => {
    server.reset();
    const source = new UrlSource(fast);
    const u = (p: string) => `${server.base}${p}`;
    const out = await readAll(source, [
      u('/status/404/a'),
      u('/status/500/b'),
      u('/status/429/c'),
      u('/drop/d'),
      u('/fail-then-ok/503/2/1.jpg'),
      u('/fail-then-ok/429/1/2.jpg'),
      u('/fail-then-ok/drop/2/3.jpg'),
      u('/fail-then-ok/404/1/4.jpg'),
    ]);
    await source.close();
    const failure = (p: string) => {
      const o = out.get(u(p))!;
      assert.ok('failure' in o, `${p} should fail`);
      return o.failure;
    };
    assert.equal(failure('/status/404/a').status, 404);
    assert.equal(server.hits.get('/status/404/a'), 1, '404 is not retried');
    assert.equal(failure('/status/500/b').status, 500);
    assert.match(failure('/status/500/b').message, /HTTP 500.*after 3 attempts/);
    assert.equal(server.hits.get('/status/500/b'), 3, '1 attempt + 2 retries');
    assert.equal(failure('/status/429/c').status, 429);
    assert.equal(server.hits.get('/status/429/c'), 3);
    assert.equal(failure('/drop/d').status, undefined, 'no response, no status');
    assert.match(failure('/drop/d').message, /connection failed/);
    assert.equal(server.hits.get('/drop/d'), 3);
    for (const [p, name] of [
      ['/fail-then-ok/503/2/1.jpg', '1.jpg'],
      ['/fail-then-ok/429/1/2.jpg', '2.jpg'],
      ['/fail-then-ok/drop/2/3.jpg', '3.jpg'],
    ] as const) {
      const o = out.get(u(p))!;
      assert.ok('bytes' in o && o.bytes.equals(files.get(name)!), `${p} recovers on retry`);
    }
    assert.equal(failure('/fail-then-ok/404/1/4.jpg').status, 404);
    assert.equal(server.hits.get('/fail-then-ok/404/1/4.jpg'), 1);
  });

  it('times out slow responses, refuses non-images and bodies over the size cap', async () => {
    server.reset();
    const source = new UrlSource({ ...fast, timeoutMs: 200, retries: 1, maxBytes: 100_000 });
    const u = (p: string) => `${server.base}${p}`;
    const out = await readAll(source, [
      u('/slow/5000/1.jpg'),
      u('/slow/10/2.jpg'),
      u('/html/x'),
      u('/big/300000/y'),
      u('/big-declared/300000/z'),
    ]);
    await source.close();
    const slow = out.get(u('/slow/5000/1.jpg'))!;
    assert.ok(
      'failure' in slow && /timed out after 200 ms after 2 attempts/.test(slow.failure.message),
      JSON.stringify(slow),
    );
    assert.equal(server.hits.get('/slow/5000/1.jpg'), 2, 'a timeout is retried');
    const quick = out.get(u('/slow/10/2.jpg'))!;
    assert.ok('bytes' in quick && quick.bytes.equals(files.get('2.jpg')!));
    const html = out.get(u('/html/x'))!;
    assert.ok('failure' in html && /not an image \(content-type text\/html\)/.test(html.failure.message));
    assert.equal(html.failure.status, 200);
    for (const p of ['/big/300000/y', '/big-declared/300000/z']) {
      const big = out.get(u(p))!;
      assert.ok('failure' in big && /too large/.test(big.failure.message), `${p}: ${JSON.stringify(big)}`);
      assert.equal(server.hits.get(p), 1, 'an oversized body is not retried');
    }
  });

  it('prefetches in order, keeping at most `concurrency` requests in flight and no further ahead than that', async () => {
    server.reset();
    server.imageDelayMs = 30;
    const source = new UrlSource({ ...fast, concurrency: 3 });
    const urls = Array.from({ length: 24 }, (_, i) => `${server.base}/img/${i % 12}.jpg?${i}`);
    const items = urls.map((p) => ({ path: p, label: null }));
    source.prefetch(items);
    let consumed = 0;
    for (const item of items) {
      const outcome = await source.read(item);
      assert.ok(outcome.bytes.equals(files.get(`${consumed % 12}.jpg`)!));
      consumed++;
      assert.ok(server.started <= consumed + 3, `started ${server.started} requests with only ${consumed} consumed`);
      await new Promise((r) => setTimeout(r, 5));
    }
    await source.close();
    server.imageDelayMs = 0;
    assert.equal(consumed, 24);
    assert.equal(server.started, 24, 'a prefetched URL is not fetched again when read');
    assert.ok(server.maxInFlight <= 3, `max in flight ${server.maxInFlight}`);
    assert.ok(server.maxInFlight >= 2, 'requests overlap');
  });

  it('a URL read before the prefetch reaches it is fetched once', async () => {
    server.reset();
    const source = new UrlSource({ ...fast, concurrency: 2 });
    const items = Array.from({ length: 6 }, (_, i) => ({ path: `${server.base}/img/${i}.jpg?once`, label: null }));
    source.prefetch(items);
    await source.read(items[5]!);
    for (const item of items.slice(0, 5)) await source.read(item);
    await source.close();
    for (const item of items) assert.equal(server.hits.get(item.path.slice(server.base.length)), 1, item.path);
  });

  it('stops prefetching when closed', async () => {
    server.reset();
    const source = new UrlSource({ ...fast, concurrency: 2 });
    const items = Array.from({ length: 20 }, (_, i) => ({ path: `${server.base}/img/0.jpg?stop${i}`, label: null }));
    source.prefetch(items);
    await source.read(items[0]!);
    await source.close();
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(server.started <= 3, `started ${server.started} of 20 after one was consumed`);
  });

  it('close() abandons requests still in flight instead of waiting for their timeouts', async () => {
    server.reset();
    const source = new UrlSource({ ...fast, timeoutMs: 60_000, retries: 3 });
    source.prefetch([{ path: `${server.base}/slow/60000/1.jpg`, label: null }]);
    while (server.started === 0) await new Promise((r) => setTimeout(r, 5));
    const reading = source.read({ path: `${server.base}/slow/60000/1.jpg`, label: null }).then(
      () => 'read',
      (e: Error) => e.message,
    );
    await source.close();
    assert.equal(await reading, 'not fetched: the source was closed');
    assert.equal(server.hits.get('/slow/60000/1.jpg'), 1, 'not retried after close');
  });

  it('goes through HTTP_PROXY, and around it for NO_PROXY hosts', async () => {
    let tunnels = 0;
    const proxy = http.createServer((_req, res) => res.writeHead(501).end());
    proxy.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      tunnels++;
      const [host, port] = (req.url ?? '').split(':');
      const upstream = net.connect(Number(port), host, () => {
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(socket);
        socket.pipe(upstream);
      });
      upstream.on('error', () => socket.destroy());
      socket.on('error', () => upstream.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const saved = {
      HTTP_PROXY: process.env.HTTP_PROXY,
      http_proxy: process.env.http_proxy,
      NO_PROXY: process.env.NO_PROXY,
      no_proxy: process.env.no_proxy,
    };
    try {
      for (const key of Object.keys(saved)) delete process.env[key];
      process.env.HTTP_PROXY = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      const proxied = new UrlSource(fast);
      const out = await readAll(proxied, [`${server.base}/img/5.jpg`]);
      await proxied.close();
      assert.ok('bytes' in out.get(`${server.base}/img/5.jpg`)!);
      assert.ok(tunnels >= 1, 'the request went through the proxy');
      const before = tunnels;
      process.env.NO_PROXY = '127.0.0.1';
      const direct = new UrlSource(fast);
      const again = await readAll(direct, [`${server.base}/img/6.jpg`]);
      await direct.close();
      assert.ok('bytes' in again.get(`${server.base}/img/6.jpg`)!);
      assert.equal(tunnels, before, 'NO_PROXY bypasses the proxy');
    } finally {
      for (const [key, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    }
  });

  it('refuses bad options by name', () => {
    assert.throws(() => new UrlSource({ concurrency: 0 }), /fetchConcurrency: expected a positive integer, got 0/);
    assert.throws(() => new UrlSource({ retries: -1 }), /fetchRetries: expected a non-negative integer/);
    assert.throws(
      () => new UrlSource({ timeoutMs: -500 }),
      /fetchTimeout: expected a positive number of seconds, got -0\.5/,
    );
  });

  it('parses Retry-After as seconds or a date', () => {
    assert.equal(parseRetryAfter('3'), 3000);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000);
    assert.equal(parseRetryAfter('soon'), null);
    assert.equal(parseRetryAfter(null), null);
  });
});

describe('UrlSource honours Retry-After', () => {
  /** Answers each path's first request with <status> and Retry-After: <value>, later ones with the image. */
  let server: http.Server;
  let base: string;
  const arrivals = new Map<string, number[]>();
  const image = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]);
  before(async () => {
    server = http.createServer((req, res) => {
      const url = req.url ?? '/';
      const times = arrivals.get(url) ?? [];
      times.push(performance.now());
      arrivals.set(url, times);
      const [, status, value] = url.split('/');
      // "date+2": an HTTP date two seconds from now (whole seconds, so between one and two seconds away).
      const retryAfter = value === 'date+2' ? new Date(Date.now() + 2000).toUTCString() : value!;
      if (times.length === 1) res.writeHead(Number(status), { 'retry-after': retryAfter }).end('later');
      else res.writeHead(200, { 'content-type': 'image/jpeg' }).end(image);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  /** Milliseconds between the first and the second request to `p`, as the server saw them. */
  const gap = (p: string) => {
    const times = arrivals.get(p)!;
    assert.equal(times.length, 2, `${p}: one refusal, one retry`);
    return times[1]! - times[0]!;
  };

  it('waits at least the seconds (429, 503) or until the date it gives, though its own backoff is 5 ms', async () => {
    const paths = ['/429/1/a', '/503/1/b', '/503/date+2/c'];
    const source = new UrlSource({ ...fast, retries: 1, backoffMs: 5, maxBackoffMs: 10_000 });
    const out = await readAll(
      source,
      paths.map((p) => base + p),
    );
    await source.close();
    for (const p of paths) {
      const o = out.get(base + p)!;
      assert.ok('bytes' in o && o.bytes.equals(image), `${p} recovers on retry: ${JSON.stringify(o)}`);
    }
    // 1 ms of slack for the clocks' rounding; a retry after the 5 ms backoff would be ~1000 ms short.
    assert.ok(gap('/429/1/a') >= 999, `429, Retry-After: 1: retried after ${gap('/429/1/a')} ms`);
    assert.ok(gap('/503/1/b') >= 999, `503, Retry-After: 1: retried after ${gap('/503/1/b')} ms`);
    // The date is read against the client's clock when the answer arrives: allow for the time in transit.
    assert.ok(gap('/503/date+2/c') >= 800, `503, Retry-After: <date>: retried after ${gap('/503/date+2/c')} ms`);
  });

  it('waits no longer than maxBackoffMs, whatever Retry-After asks', async () => {
    const source = new UrlSource({ ...fast, retries: 1, backoffMs: 5, maxBackoffMs: 100 });
    const out = await readAll(source, [`${base}/429/30/d`]);
    await source.close();
    const o = out.get(`${base}/429/30/d`)!;
    assert.ok('bytes' in o, JSON.stringify(o));
    assert.ok(gap('/429/30/d') >= 99, `retried after ${gap('/429/30/d')} ms: the cap is a wait, too`);
    assert.ok(gap('/429/30/d') < 30_000, `retried after ${gap('/429/30/d')} ms, not the 30 s asked for`);
  });
});

describe('openDataset with URLs', () => {
  const u = (n: number) => `http://127.0.0.1:9/img/${n}.jpg`;

  it('reads a .txt list of URLs as an unlabelled URL dataset, each URL once', async () => {
    const dir = await tempDir();
    const list = path.join(dir, 'urls.txt');
    await fs.writeFile(list, `# a comment\n${u(1)}\n\n${u(2)}\n${u(1)}\n`);
    const ds = await openDataset({ data: list, split: 'train', seed: 0 });
    await ds.source.close?.();
    assert.equal(ds.layout, 'url-list');
    assert.ok(ds.source instanceof UrlSource);
    assert.deepEqual(ds.items, [
      { path: u(1), label: null },
      { path: u(2), label: null },
    ]);
  });

  it('refuses a list that mixes URLs and file paths', async () => {
    const dir = await tempDir();
    const list = path.join(dir, 'mixed.txt');
    await fs.writeFile(list, `${u(1)}\nlocal/a.jpg\n`);
    await assert.rejects(
      openDataset({ data: list, split: 'train', seed: 0 }),
      /data .*mixed\.txt: mixes 1 URLs with 1 file paths \(e\.g\. local\/a\.jpg\)/,
    );
  });

  it('reads a CSV whose url column holds URLs, as --data or --labels, with labels and --val-fraction', async () => {
    const dir = await tempDir();
    const csv = path.join(dir, 'urls.csv');
    const rows = Array.from({ length: 10 }, (_, i) => `${u(i)},"a caption, with a comma",${i % 2 ? 'cat' : 'dog'}`);
    await fs.writeFile(csv, ['url,caption,label', ...rows].join('\n'));
    const ds = await openDataset({ data: csv, split: 'train', seed: 0 });
    await ds.source.close?.();
    assert.equal(ds.layout, 'url-csv');
    assert.deepEqual(ds.classes, ['cat', 'dog']);
    assert.deepEqual(ds.items[1], { path: u(1), label: 0 });
    assert.equal(ds.items.length, 10);
    const val = await openDataset({ data: dir, labels: csv, split: 'val', valFraction: 0.2, seed: 0 });
    await val.source.close?.();
    assert.equal(val.items.length, 2);
    assert.deepEqual(new Set(val.items.map((i) => i.label)), new Set([0, 1]), 'stratified');
  });

  it('refuses a CSV as --data whose ids are not URLs', async () => {
    const dir = await tempDir();
    const csv = path.join(dir, 'files.csv');
    await fs.writeFile(csv, 'id,label\na.jpg,cat\n');
    await assert.rejects(
      openDataset({ data: csv, split: 'train', seed: 0 }),
      /a CSV as (--)?data must hold http\(s\) URLs/,
    );
  });
});

describe('extract from URLs', () => {
  let server: FlakyServer;
  let dir: string;
  let model: string;
  before(async () => {
    server = await startFlakyServer();
    dir = await tempDir();
    model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    for (let i = 0; i < 6; i++) {
      const file = path.join(dir, 'folder', `${i}.jpg`);
      await writeImage(file, 50 + i);
      server.images.set(`${i}.jpg`, await fs.readFile(file));
    }
  });
  after(() => server.close());

  const options = (
    data: string,
    cache: string,
    extra: Partial<ExtractOptions> = {},
  ): Partial<ExtractOptions> & { data: string } => ({
    data,
    model,
    cache,
    device: 'cpu',
    threads: 1,
    batchSize: 4,
    partRows: 4,
    fetch: { retries: 1, backoffMs: 5, timeoutMs: 5000 },
    ...extra,
  });

  it('rows are keyed by URL with the features of the same files read locally; failures carry their HTTP status; re-runs fetch nothing', async () => {
    const good = Array.from({ length: 6 }, (_, i) => `${server.base}/img/${i}.jpg`);
    const bad = [
      `${server.base}/status/404/a`,
      `${server.base}/status/500/b`,
      `${server.base}/drop/c`,
      `${server.base}/html/d`,
    ];
    const list = path.join(dir, 'urls.txt');
    await fs.writeFile(list, [...good, ...bad].join('\n'));
    const cache = path.join(dir, 'cache-urls');
    const first = await extract(options(list, cache));
    assert.deepEqual([first.extracted, first.failed, first.exitCode], [6, 4, ExitCode.partial]);
    const reference = await extract(options(path.join(dir, 'folder'), path.join(dir, 'cache-folder')));
    assert.equal(reference.extracted, 6);
    const got = await (await FeatureCache.open(cache)).read('train');
    const want = await (await FeatureCache.open(path.join(dir, 'cache-folder'))).read('train');
    assert.deepEqual(got.paths, [...good].sort());
    for (let i = 0; i < 6; i++) {
      const k = got.paths.indexOf(`${server.base}/img/${want.paths[i]}`);
      assert.deepEqual(
        got.features.subarray(k * got.dim, (k + 1) * got.dim),
        want.features.subarray(i * want.dim, (i + 1) * want.dim),
      );
    }
    const ledger = new Map((await (await FeatureCache.open(cache)).failures('train')).map((f) => [f.path, f]));
    assert.deepEqual([...ledger.keys()].sort(), [...bad].sort());
    assert.equal(ledger.get(bad[0]!)!.status, 404);
    assert.equal(ledger.get(bad[1]!)!.status, 500);
    assert.equal(ledger.get(bad[2]!)!.status, undefined);
    assert.equal(ledger.get(bad[3]!)!.status, 200);
    assert.equal(ledger.get(bad[0]!)!.stage, 'read');
    assert.match(ledger.get(bad[1]!)!.message, /HTTP 500 .*after 2 attempts/);

    server.reset();
    const again = await extract(options(list, cache));
    assert.deepEqual([again.extracted, again.unchanged, again.failed], [0, 10, 0]);
    assert.equal(server.started, 0, 'cached URLs and recorded failures are not fetched again');
    const retry = await extract(options(list, cache, { retryFailed: true }));
    assert.deepEqual([retry.extracted, retry.unchanged, retry.failed], [0, 6, 4]);
    assert.deepEqual(
      [...server.hits.keys()].sort(),
      [...bad].map((u) => u.slice(server.base.length)).sort(),
      '--retry-failed fetches only the failures',
    );
  });
});

describe('predict with URLs', () => {
  it('predicts URLs (given directly or in a .txt list) exactly as the same files on disk; a failed URL is one failed prediction', async () => {
    const server = await startFlakyServer();
    try {
      const dir = await tempDir();
      const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
      await writeColourFolder(path.join(dir, 'data'), 6);
      const cache = path.join(dir, 'features');
      const head = path.join(dir, 'head');
      assert.equal(
        (
          await runCli([
            'extract',
            '--data',
            path.join(dir, 'data'),
            '--model',
            model,
            '--cache',
            cache,
            '--device',
            'cpu',
          ])
        ).code,
        0,
      );
      const trained = await runCli(['train-head', '--cache', cache, '--head', head, '--epochs', '5', '--json']);
      assert.equal(trained.code, 0, trained.stderr);
      const local = ['red/red0.png', 'green/green1.png', 'blue/blue2.png'].map((p) => path.join(dir, 'data', 'val', p));
      for (const file of local) server.images.set(path.basename(file), await fs.readFile(file));
      const urls = local.map((f) => `${server.base}/img/${path.basename(f)}`);
      const list = path.join(dir, 'urls.txt');
      await fs.writeFile(list, `${urls[1]}\n${urls[2]}\n${server.base}/status/404/missing.png\n`);
      const r = await runCli([
        'predict',
        urls[0]!,
        list,
        ...local,
        '--head',
        head,
        '--json',
        '--device',
        'cpu',
        '--fetch-retries',
        '0',
      ]);
      assert.equal(r.code, ExitCode.partial, r.stderr);
      const predictions = new Map(
        r.stdout
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { path: string; top: unknown[]; error?: string })
          .map((p) => [p.path, p]),
      );
      for (const [i, url] of urls.entries()) {
        assert.ok(predictions.get(url)?.top.length, `${url}: ${JSON.stringify(predictions.get(url))}`);
        assert.deepEqual(predictions.get(url)!.top, predictions.get(local[i]!)!.top);
      }
      assert.match(predictions.get(`${server.base}/status/404/missing.png`)!.error!, /HTTP 404/);
    } finally {
      await server.close();
    }
  });
});
