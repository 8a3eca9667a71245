/**
 * A local image server on 127.0.0.1 that misbehaves on request: it drops connections, answers 404/500/429, serves
 * slowly, serves non-images and oversized bodies, and counts hits and concurrency so tests can check retries.
 *   /img/<name>          the image registered under <name> (image/jpeg)
 *   /status/<code>/<id>  always answers <code> (429 adds Retry-After: 0)
 *   /fail-then-ok/<code>/<n>/<name>  answers <code> (or drops the connection when code is "drop") n times, then the image
 *   /drop/<id>           destroys the socket before any response
 *   /slow/<ms>/<name>    the image after <ms> ms (headers sent at once, body after the delay)
 *   /html/<id>           a text/html page
 *   /big/<bytes>/<id>    <bytes> of octets, chunked (no content-length)
 *   /big-declared/<bytes>/<id>  same, with content-length
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FlakyServer {
  base: string;
  images: Map<string, Buffer>;
  /** Requests received per path. */
  hits: Map<string, number>;
  /** Most requests in flight at once since the last reset. */
  maxInFlight: number;
  /** Requests started so far (all paths). */
  started: number;
  /** Delay added to every /img response, to make concurrency observable. */
  imageDelayMs: number;
  reset(): void;
  close(): Promise<void>;
}

export async function startFlakyServer(): Promise<FlakyServer> {
  let inFlight = 0;
  const state: Omit<FlakyServer, 'base' | 'close' | 'reset'> = {
    images: new Map(),
    hits: new Map(),
    maxInFlight: 0,
    started: 0,
    imageDelayMs: 0,
  };
  const sendImage = (res: http.ServerResponse, name: string) => {
    const image = state.images.get(name);
    if (!image) {
      res.writeHead(404).end('no such image');
      return;
    }
    res
      .writeHead(200, {
        'content-type': 'image/jpeg',
        'content-length': image.length,
        'last-modified': 'Wed, 21 Oct 2015 07:28:00 GMT',
      })
      .end(image);
  };
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    state.hits.set(url, (state.hits.get(url) ?? 0) + 1);
    state.started++;
    inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, inFlight);
    let done = false;
    const finish = () => {
      if (!done) inFlight--;
      done = true;
    };
    res.on('finish', finish);
    res.on('close', finish);
    const parts = url.split('?')[0]!.split('/').slice(1);
    const hits = state.hits.get(url)!;
    switch (parts[0]) {
      case 'img':
        if (state.imageDelayMs > 0) setTimeout(() => sendImage(res, parts[1]!), state.imageDelayMs);
        else sendImage(res, parts[1]!);
        return;
      case 'status': {
        const code = Number(parts[1]);
        res.writeHead(code, code === 429 ? { 'retry-after': '0' } : {}).end(`status ${code}`);
        return;
      }
      case 'fail-then-ok': {
        if (hits <= Number(parts[2])) {
          if (parts[1] === 'drop') req.socket.destroy();
          else res.writeHead(Number(parts[1]), parts[1] === '429' ? { 'retry-after': '0' } : {}).end('not yet');
          return;
        }
        sendImage(res, parts[3]!);
        return;
      }
      case 'drop':
        req.socket.destroy();
        return;
      case 'slow': {
        res.writeHead(200, { 'content-type': 'image/jpeg' });
        res.flushHeaders();
        const timer = setTimeout(() => res.end(state.images.get(parts[2]!)), Number(parts[1]));
        res.on('close', () => clearTimeout(timer));
        return;
      }
      case 'html':
        res
          .writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
          .end('<html><body>not an image</body></html>');
        return;
      case 'big':
      case 'big-declared': {
        const bytes = Number(parts[1]);
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          ...(parts[0] === 'big-declared' ? { 'content-length': bytes } : {}),
        });
        const chunk = Buffer.alloc(64 * 1024, 7);
        let sent = 0;
        const pump = () => {
          while (sent < bytes) {
            const n = Math.min(chunk.length, bytes - sent);
            sent += n;
            if (!res.write(chunk.subarray(0, n))) {
              res.once('drain', pump);
              return;
            }
          }
          res.end();
        };
        pump();
        return;
      }
      default:
        res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const result = state as FlakyServer;
  result.base = `http://127.0.0.1:${port}`;
  result.reset = () => {
    state.hits.clear();
    state.maxInFlight = 0;
    state.started = 0;
  };
  result.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return result;
}
