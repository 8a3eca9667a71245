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
