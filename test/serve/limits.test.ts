/** Issue 27 items 9 and 11: serve bounds slow uploads, refuses timer overflow, names --host, and 400s broken forms. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { serve } from '../../src/jobs/serve.js';
import { tempDir, writeImage, writeTinyModel } from '../support/helpers.js';
import { writeTestHead } from './heads.js';

/** Sends `head` then `body` on a raw socket; resolves with the status line of the answer, or 'closed'. */
function rawRequest(url: string, head: string, body: Buffer, trickleMs = 0): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve) => {
    let answer = '';
    const socket = net.connect(Number(u.port), u.hostname, () => {
      socket.write(head);
      if (trickleMs === 0) socket.write(body);
      else {
        let i = 0;
        const timer = setInterval(() => {
          if (socket.destroyed || i >= body.length) return clearInterval(timer);
          socket.write(body.subarray(i, ++i));
        }, trickleMs);
        socket.on('close', () => clearInterval(timer));
      }
    });
    socket.on('data', (d) => (answer += d.toString('latin1')));
    socket.on('close', () => resolve(answer.split('\r\n')[0] || 'closed'));
    socket.on('error', () => {});
  });
}

describe('serve limits (issue 27, items 9 and 11)', () => {
  let dir: string;
  let head: string;
  let image: Buffer;
  before(async () => {
    dir = await tempDir();
    const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    head = path.join(dir, 'head');
    await writeTestHead(head, { model, tappedTensor: 'pooled', dim: 3, classes: ['a', 'b'], normalization: 'none' });
    await writeImage(path.join(dir, 'x.png'), 5, { format: 'png' });
    image = await fs.readFile(path.join(dir, 'x.png'));
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  it('--timeout-ms beyond what a Node timer holds is refused, naming the flag', async () => {
    await assert.rejects(
      serve({ head, port: 0, timeoutMs: 2 ** 31 }),
      /timeoutMs: expected a positive integer of milliseconds up to 2147483647/,
    );
  });

  it('an address that cannot be bound is blamed on --host, not --port', async () => {
    await assert.rejects(
      serve({ head, port: 0, host: 'no-such-host.invalid' }),
      /^FeatcacheError: host: cannot listen/,
    );
  });

  it(
    'slow uploads are cut (408) and free their slots; a real request is then answered',
    { timeout: 60_000 },
    async () => {
      const s = await serve({ head, port: 0, maxQueue: 2, timeoutMs: 4000 });
      await s.ready;
      try {
        const slow = [0, 1].map(() =>
          rawRequest(
            s.url,
            'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n',
            Buffer.alloc(100000, 1),
            200,
          ),
        );
        for (const status of await Promise.all(slow)) assert.match(status, /^HTTP\/1\.1 408/);
        const r = await fetch(new URL('predict', s.url), { method: 'POST', body: image as unknown as BodyInit });
        assert.equal(r.status, 200, await r.text());
      } finally {
        await s.close();
      }
    },
  );

  it('a multipart part that never terminates is a 400, not a 500', async () => {
    const s = await serve({ head, port: 0 });
    await s.ready;
    try {
      const body = Buffer.concat([
        Buffer.from(
          '--XYZ\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n',
        ),
        image,
      ]);
      const status = await rawRequest(
        s.url,
        `POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: ${body.length}\r\n\r\n`,
        body,
      );
      assert.match(status, /^HTTP\/1\.1 400/);
    } finally {
      await s.close();
    }
  });
});
