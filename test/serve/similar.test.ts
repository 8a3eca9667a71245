/**
 * serve's POST /similar end to end on real features (monkeys validation through MobileNetV2-int8, as
 * test/neighbors/similar.test.ts): every answer — raw and multipart uploads, concurrent ones batched together, ?k —
 * equals what `featcache similar` answers for the same image file (its own backbone session, not the server's), and a
 * copy of a cached image finds its original first. Then the refusals: a cache of another model, an unknown split,
 * bad ?k, and /similar on a server started without a split.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ServeHandle, serve } from '../../src/jobs/serve.js';
import { type SimilarAnswer, similar } from '../../src/jobs/similar.js';
import { FeatureCache } from '../../src/store/reader.js';
import { mobilenetModel, runCli, tempDir, writeTinyModel } from '../support/helpers.js';
import { monkeys, monkeysCache, needsMonkeys } from '../support/neighbors.js';
import { writeTestHead } from './heads.js';

interface Neighbour {
  rank: number;
  path: string;
  label: string | null;
  similarity: number;
  distance: number;
}

interface SimilarBody {
  split?: string;
  k?: number;
  method?: string;
  neighbours?: Neighbour[];
  error?: string;
  timing?: { batchSize: number; searchBatchSize: number };
}

async function postSimilar(url: string, body: Uint8Array | FormData, query = ''): Promise<[number, SimilarBody]> {
  const response = await fetch(new URL(`similar${query}`, url), { method: 'POST', body: body as BodyInit });
  return [response.status, (await response.json()) as SimilarBody];
}

/** The served answer must be `featcache similar`'s for the same file: same rows in order, same similarities. */
function assertSameAnswer(served: SimilarBody, reference: SimilarAnswer, k: number, what: string): void {
  const neighbours = served.neighbours!;
  assert.equal(neighbours.length, k, what);
  assert.deepEqual(
    neighbours.map((n) => n.path),
    reference.neighbours.slice(0, k).map((n) => n.path),
    what,
  );
  neighbours.forEach((n, i) => {
    const r = reference.neighbours[i]!;
    assert.equal(n.rank, i + 1);
    assert.equal(n.label, r.label, `${what}: label of ${n.path}`);
    assert.ok(
      Math.abs(n.similarity - r.similarity) < 1e-4,
      `${what} rank ${i + 1}: ${n.similarity} vs ${r.similarity}`,
    );
    assert.ok(Math.abs(n.distance - (1 - n.similarity)) < 1e-6);
  });
}

describe('serve POST /similar (issue 24)', { skip: needsMonkeys }, () => {
  let dir: string;
  let cache: string;
  let head: string;
  let server: ServeHandle;
  /** Query files: a copy of a cached validation image, then training images the cache does not hold. */
  let queries: string[];
  let expected: Map<string, SimilarAnswer>;
  let copyOf: string;
  let rows: number;

  before(async () => {
    dir = await tempDir('featcache-serve-similar-');
    cache = await monkeysCache(['validation'], path.join(dir, 'features'));
    const opened = await FeatureCache.open(cache);
    const manifest = opened.manifest;
    rows = (await opened.read('validation')).count;
    head = path.join(dir, 'head');
    await writeTestHead(head, {
      model: mobilenetModel,
      tappedTensor: manifest.tappedTensor,
      dim: manifest.dim,
      classes: ['first', 'second', 'third'],
      normalization: 'l2',
      preset: manifest.preset,
    });
    copyOf = 'validation/n3/n300.jpg';
    const copy = path.join(dir, 'queries', 'copy.jpg');
    await fs.mkdir(path.dirname(copy), { recursive: true });
    await fs.copyFile(path.join(monkeys, copyOf), copy);
    const training = path.join(monkeys, 'training');
    const others: string[] = [];
    for (const cls of ['n0', 'n4', 'n7', 'n9']) {
      const first = (await fs.readdir(path.join(training, cls))).sort().find((f) => f.endsWith('.jpg'))!;
      others.push(path.join(training, cls, first));
    }
    queries = [copy, ...others];
    const reference = await similar({ cache, split: 'validation', queries, k: 20, device: 'cpu' });
    assert.equal(reference.failed, 0);
    expected = new Map(reference.answers.map((a) => [a.query, a]));
    server = await serve({ head, port: 0, cache, similarSplit: 'validation', device: 'cpu', maxWaitMs: 200 });
    await server.ready;
  });
  after(async () => {
    await server?.close();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it("answers an uploaded image with featcache similar's neighbours; a copy of a cached image finds it first", async () => {
    const [status, body] = await postSimilar(server.url, await fs.readFile(queries[0]!));
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.split, 'validation');
    assert.equal(body.method, 'exact');
    assert.equal(body.k, 10, 'default --similar-k');
    assertSameAnswer(body, expected.get(queries[0]!)!, 10, 'copy');
    assert.equal(body.neighbours![0]!.path, copyOf);
    assert.ok(body.neighbours![0]!.similarity > 0.99, `copy's similarity ${body.neighbours![0]!.similarity}`);
    const health = await (await fetch(new URL('health', server.url))).json();
    assert.deepEqual(health.similar, { split: 'validation', rows, method: 'exact' });
    const info = await (await fetch(new URL('model', server.url))).json();
    assert.deepEqual(info.similar, { cache, split: 'validation', rows, dim: 1280, method: 'exact', metric: 'cosine' });
  });

  it('answers concurrent raw and multipart uploads, batched together, each with its own neighbours; ?k=N', async () => {
    const answers = await Promise.all(
      queries.map(async (file, i) => {
        const bytes = await fs.readFile(file);
        if (i % 2 === 0) return postSimilar(server.url, bytes, '?k=20');
        const form = new FormData();
        form.append('image', new Blob([bytes]), path.basename(file));
        return postSimilar(server.url, form, '?k=20');
      }),
    );
    answers.forEach(([status, body], i) => {
      assert.equal(status, 200, JSON.stringify(body));
      assertSameAnswer(body, expected.get(queries[i]!)!, 20, queries[i]!);
    });
    assert.ok(
      answers.some(([, body]) => body.timing!.batchSize > 1),
      `batch sizes ${answers.map(([, b]) => b.timing!.batchSize).join(',')}`,
    );
    const [, three] = await postSimilar(server.url, await fs.readFile(queries[1]!), '?k=3');
    assertSameAnswer(three, expected.get(queries[1]!)!, 3, 'k=3');
  });

  it('/predict on the same server still answers as a server without /similar does', async () => {
    const plain = await serve({ head, port: 0, device: 'cpu' });
    try {
      await plain.ready;
      const bytes = await fs.readFile(queries[2]!);
      const a = await (await fetch(new URL('predict', server.url), { method: 'POST', body: bytes })).json();
      const b = await (await fetch(new URL('predict', plain.url), { method: 'POST', body: bytes })).json();
      assert.equal(a.top.length, 3);
      a.top.forEach((t: { label: string; probability: number }, i: number) => {
        assert.equal(t.label, b.top[i].label);
        assert.ok(Math.abs(t.probability - b.top[i].probability) < 1e-5);
      });
    } finally {
      await plain.close();
    }
  });

  it('refuses a bad ?k and a body that is not an image with a 400 naming the problem', async () => {
    const bytes = await fs.readFile(queries[1]!);
    for (const k of ['0', 'abc', '101', '2.5']) {
      const [status, body] = await postSimilar(server.url, bytes, `?k=${k}`);
      assert.equal(status, 400, `k=${k}: ${JSON.stringify(body)}`);
      assert.match(body.error!, /^k: expected a positive integer up to 100 \(similarMaxK\)/);
    }
    const [status, body] = await postSimilar(server.url, Buffer.from('not an image'));
    assert.equal(status, 400);
    assert.match(body.error!, /not an image/);
  });

  it('the CLI: --similar-split serves /similar; an unknown split, and a cache of another model, are refused', async () => {
    const unknown = await runCli(['serve', '--head', head, '--cache', cache, '--similar-split', 'test', '--port', '0']);
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.match(unknown.stderr, /--similar-split: the cache .* has no split "test" \(it has: validation\)/);

    const bigK = await runCli(['serve', '--head', head, '--similar-k', '500', '--port', '0']);
    assert.equal(bigK.code, 2, bigK.stderr);
    assert.match(bigK.stderr, /--similar-k: expected an integer in \[1, 100\], got 500/);
    const noCache = await runCli(['serve', '--head', head, '--similar-split', 'x', '--cache', path.join(dir, 'none')]);
    assert.equal(noCache.code, 2, noCache.stderr);
    assert.match(noCache.stderr, /--cache .*none: no feature cache here/);

    const tiny = await writeTinyModel(path.join(dir, 'tiny.onnx'));
    const tinyHead = path.join(dir, 'tiny-head');
    await writeTestHead(tinyHead, {
      model: tiny,
      tappedTensor: 'pooled',
      dim: 3,
      classes: ['a', 'b'],
      normalization: 'l2',
    });
    const other = await runCli([
      ...['serve', '--head', tinyHead, '--cache', cache, '--similar-split', 'validation', '--port', '0'],
    ]);
    assert.equal(other.code, 2, other.stderr);
    assert.match(
      other.stderr,
      /--cache .*: holds features of another backbone or preprocessing than the served model \(model sha256/,
    );

    const off = await serve({ head: tinyHead, port: 0 });
    try {
      await off.ready;
      const [status, body] = await postSimilar(off.url, await fs.readFile(queries[1]!));
      assert.equal(status, 404);
      assert.match(body.error!, /POST \/similar is off: start serve with similarSplit SPLIT/);
    } finally {
      await off.close();
    }
  });
});
