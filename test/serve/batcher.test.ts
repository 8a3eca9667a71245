import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BatcherClosedError, MicroBatcher, QueueFullError, QueueTimeoutError } from '../../src/serve/batcher.js';

/** A run function whose batches finish only when the test says so. */
function gated() {
  const batches: number[][] = [];
  const gates: (() => void)[] = [];
  const run = (items: number[]) => {
    batches.push(items);
    return new Promise<number[]>((resolve) => gates.push(() => resolve(items.map((x) => x * 10))));
  };
  const open = async () => {
    while (gates.length === 0) await new Promise((r) => setImmediate(r));
    gates.shift()!();
  };
  return { batches, run, open };
}

describe('MicroBatcher', () => {
  it('runs a batch as soon as maxBatch requests wait, the rest after maxWaitMs, and answers each caller with its own output', async () => {
    const batches: number[][] = [];
    const b = new MicroBatcher<number, number>(
      (items) => {
        batches.push(items);
        return Promise.resolve(items.map((x) => x * 10));
      },
      {
        maxBatch: 4,
        maxWaitMs: 30,
        maxQueue: 100,
        timeoutMs: 10_000,
      },
    );
    const results = await Promise.all([1, 2, 3, 4, 5].map((x) => b.submit(x)));
    assert.deepEqual(
      results.map((r) => r.output),
      [10, 20, 30, 40, 50],
    );
    assert.deepEqual(batches, [[1, 2, 3, 4], [5]]);
    assert.deepEqual(
      results.map((r) => r.batchSize),
      [4, 4, 4, 4, 1],
    );
    assert.deepEqual(b.stats().batchSizes, [0, 1, 0, 0, 1]);
  });

  it('gathers requests that arrive while a batch runs into the next batch', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, { maxBatch: 8, maxWaitMs: 0, maxQueue: 100, timeoutMs: 10_000 });
    const first = b.submit(1);
    await new Promise((r) => setTimeout(r, 5));
    const later = [2, 3, 4].map((x) => b.submit(x));
    await g.open();
    await g.open();
    const all = await Promise.all([first, ...later]);
    assert.deepEqual(g.batches, [[1], [2, 3, 4]]);
    assert.deepEqual(
      all.map((r) => r.output),
      [10, 20, 30, 40],
    );
  });

  it('refuses at once when the queue is full, and times out requests left waiting', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, { maxBatch: 1, maxWaitMs: 0, maxQueue: 2, timeoutMs: 40 });
    const running = b.submit(1);
    await new Promise((r) => setTimeout(r, 5));
    const queued = [b.submit(2), b.submit(3)];
    await assert.rejects(b.submit(4), QueueFullError);
    for (const q of queued) await assert.rejects(q, QueueTimeoutError);
    assert.equal(b.stats().timedOut, 2);
    assert.equal(b.stats().refused, 1);
    await g.open();
    assert.equal((await running).output, 10);
  });

  it('a timed-out request frees its queue slot and never reaches the model', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, { maxBatch: 2, maxWaitMs: 0, maxQueue: 2, timeoutMs: 150 });
    const running = b.submit(1);
    await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(g.batches, [[1]], 'the first request runs alone; the model is now busy');
    const expired = [b.submit(2), b.submit(3)];
    assert.equal(b.stats().queued, 2);
    for (const e of expired) await assert.rejects(e, QueueTimeoutError);
    assert.equal(b.stats().queued, 0, 'timed-out requests leave the queue');
    // Both slots are free again: two new requests are taken, a third is refused (the limit still holds).
    const fresh = [b.submit(4), b.submit(5)];
    await assert.rejects(b.submit(6), QueueFullError);
    await g.open();
    await g.open();
    assert.deepEqual(
      (await Promise.all(fresh)).map((r) => r.output),
      [40, 50],
    );
    assert.equal((await running).output, 10);
    assert.deepEqual(g.batches, [[1], [4, 5]], 'the model never saw 2 or 3');
    assert.deepEqual([b.stats().timedOut, b.stats().refused, b.stats().items], [2, 1, 3]);
  });

  it('a request that times out between others leaves their order and answers intact', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, { maxBatch: 4, maxWaitMs: 0, maxQueue: 10, timeoutMs: 300 });
    const running = b.submit(1);
    await new Promise((r) => setTimeout(r, 5));
    const early = b.submit(2);
    // 3 and 4 arrive later, so they are still well inside their deadline when 2 times out.
    await new Promise((r) => setTimeout(r, 240));
    const late = [b.submit(3), b.submit(4)];
    await assert.rejects(early, QueueTimeoutError);
    assert.equal(b.stats().queued, 2);
    await g.open();
    await g.open();
    assert.deepEqual(
      (await Promise.all(late)).map((r) => r.output),
      [30, 40],
    );
    await running;
    assert.deepEqual(g.batches, [[1], [3, 4]]);
  });

  it('rejects the whole batch when the model fails, and keeps serving afterwards', async () => {
    let fail = true;
    const b = new MicroBatcher<number, number>(
      async (items) => {
        await Promise.resolve(); // an async model: its failure is a rejected promise, not a throw
        if (fail) throw new Error('boom');
        return items;
      },
      { maxBatch: 2, maxWaitMs: 1, maxQueue: 10, timeoutMs: 1000 },
    );
    const failed = [b.submit(1), b.submit(2)];
    for (const f of failed) await assert.rejects(f, /boom/);
    fail = false;
    assert.equal((await b.submit(3)).output, 3);
  });

  it('drain answers what was submitted, then refuses new work', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, {
      maxBatch: 2,
      maxWaitMs: 60_000,
      maxQueue: 10,
      timeoutMs: 60_000,
    });
    const pending = b.submit(7);
    const drained = b.drain();
    await g.open();
    await drained;
    assert.equal((await pending).output, 70);
    await assert.rejects(b.submit(8), BatcherClosedError);
  });
});

describe('MicroBatcher: what a mutation run found untested', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** 'waiting' when `p` has not settled within `ms` (a model call that never came), else its outcome. */
  const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, sleep(ms).then(() => 'waiting' as const)]);

  it('errors say what happened and are named', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, { maxBatch: 1, maxWaitMs: 0, maxQueue: 1, timeoutMs: 50 });
    const running = b.submit(1);
    await sleep(5);
    const queued = b.submit(2);
    const full = await b.submit(3).catch((e: Error) => e);
    assert.ok(full instanceof QueueFullError);
    assert.equal(full.name, 'QueueFullError');
    assert.equal(full.message, 'the queue is full (1 requests waiting); retry later');
    const late = await queued.catch((e: Error) => e);
    assert.ok(late instanceof QueueTimeoutError);
    assert.equal(late.name, 'QueueTimeoutError');
    assert.equal(late.message, 'timed out after 50 ms waiting for the model');
    await g.open();
    await running;
    await b.drain();
    const closed = await b.submit(4).catch((e: Error) => e);
    assert.ok(closed instanceof BatcherClosedError);
    assert.deepEqual([closed.name, closed.message], ['BatcherClosedError', 'the server is shutting down']);
  });

  it('one batch at a time: a full queue waits for the running batch; stats count batches, items and the running one', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, { maxBatch: 2, maxWaitMs: 0, maxQueue: 10, timeoutMs: 10_000 });
    const all = [b.submit(1), b.submit(2)];
    await sleep(5);
    all.push(b.submit(3), b.submit(4), b.submit(5));
    await sleep(5);
    assert.deepEqual(g.batches, [[1, 2]], 'no second model call while one runs');
    assert.deepEqual([b.stats().running, b.stats().queued, b.stats().batches, b.stats().items], [1, 3, 1, 2]);
    await g.open();
    await g.open();
    await g.open();
    const results = await Promise.all(all);
    assert.deepEqual(g.batches, [[1, 2], [3, 4], [5]]);
    assert.deepEqual(
      results.map((r) => r.batchSize),
      [2, 2, 2, 2, 1],
    );
    assert.deepEqual([b.stats().running, b.stats().queued, b.stats().batches, b.stats().items], [0, 0, 3, 5]);
    assert.deepEqual(b.stats().batchSizes, [0, 1, 2]);
  });

  it('a partial batch waits maxWaitMs for company: two requests 30 ms apart share a batch when it is 400 ms', async () => {
    const batches: number[][] = [];
    const b = new MicroBatcher<number, number>(
      (items) => {
        batches.push(items);
        return Promise.resolve(items);
      },
      { maxBatch: 8, maxWaitMs: 400, maxQueue: 10, timeoutMs: 10_000 },
    );
    const first = b.submit(1);
    await sleep(30);
    const second = b.submit(2);
    await Promise.all([first, second]);
    assert.deepEqual(batches, [[1, 2]]);
  });

  it('waitMs and runMs are the time queued and the time in the model', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, { maxBatch: 1, maxWaitMs: 0, maxQueue: 10, timeoutMs: 10_000 });
    const t0 = performance.now();
    const first = b.submit(1);
    const second = b.submit(2);
    await sleep(40);
    await g.open();
    await sleep(40);
    await g.open();
    const [a, c] = await Promise.all([first, second]);
    const elapsed = performance.now() - t0;
    for (const r of [a, c]) {
      assert.ok(r.waitMs >= 0 && r.waitMs <= elapsed, `waitMs ${r.waitMs} of ${elapsed}`);
      assert.ok(r.runMs >= 35 && r.runMs <= elapsed, `runMs ${r.runMs} of ${elapsed}: the gate was held ≥ 40 ms`);
    }
    assert.ok(c.waitMs >= 35, `the second request queued behind the first for ≥ 40 ms: ${c.waitMs}`);
  });

  it('a model that returns the wrong number of outputs fails every caller of the batch, saying so', async () => {
    const b = new MicroBatcher<number, number>((items) => Promise.resolve(items.slice(1)), {
      maxBatch: 2,
      maxWaitMs: 50,
      maxQueue: 10,
      timeoutMs: 10_000,
    });
    const calls = [b.submit(1), b.submit(2)];
    for (const c of calls) await assert.rejects(c, /^Error: the model returned 1 results for 2 inputs$/);
  });

  it('hurry: a waiting partial batch runs at once, but never beside a running one', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, {
      maxBatch: 8,
      maxWaitMs: 60_000,
      maxQueue: 10,
      timeoutMs: 60_000,
    });
    const lone = b.submit(1);
    assert.equal(await within(lone, 50), 'waiting', 'without hurry a partial batch waits maxWaitMs');
    assert.deepEqual(g.batches, []);
    b.hurry();
    await sleep(5);
    assert.deepEqual(g.batches, [[1]], 'hurry runs it now');
    const next = b.submit(2);
    b.hurry();
    await sleep(5);
    assert.deepEqual(g.batches, [[1]], 'not while a batch runs');
    await g.open();
    await sleep(5);
    assert.deepEqual(g.batches, [[1], [2]], 'hurrying: the next runs as soon as the model is free');
    await g.open();
    assert.deepEqual([(await lone).output, (await next).output], [10, 20]);
    b.hurry();
    assert.deepEqual(g.batches, [[1], [2]], 'hurry with nothing queued runs nothing');
  });

  it('drain: at once when idle; flushes a waiting partial batch; waits for a running one', async () => {
    const g = gated();
    const b = new MicroBatcher<number, number>(g.run, {
      maxBatch: 8,
      maxWaitMs: 60_000,
      maxQueue: 10,
      timeoutMs: 60_000,
    });
    const idle = new MicroBatcher<number, number>(g.run, { maxBatch: 8, maxWaitMs: 0, maxQueue: 10, timeoutMs: 1000 });
    assert.equal(await within(idle.drain(), 1000), undefined, 'an idle batcher drains at once');
    const waiting = b.submit(1);
    const drained = b.drain();
    await sleep(5);
    assert.deepEqual(g.batches, [[1]], 'drain does not wait out maxWaitMs');
    assert.equal(await within(drained, 30), 'waiting', 'drain waits for the running batch');
    await g.open();
    await drained;
    assert.equal((await waiting).output, 10);
  });
});
