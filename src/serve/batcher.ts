/**
 * A dynamic batcher in the manner of Triton's: requests queue up, and one inference call takes up to `maxBatch` of
 * them, either as soon as that many are waiting or once the oldest has waited `maxWaitMs`. While a batch runs, new
 * requests keep queueing, so under load batches fill by themselves. The queue is bounded (back-pressure: a full
 * queue refuses at once rather than letting latency grow without limit) and each request has a deadline.
 */

export interface BatcherOptions {
  maxBatch: number;
  maxWaitMs: number;
  /** Requests waiting (not yet in a running batch) at most; one more is refused with QueueFullError. */
  maxQueue: number;
  /** A request still queued this long after submission is dropped with QueueTimeoutError. */
  timeoutMs: number;
}

export class QueueFullError extends Error {
  constructor(readonly limit: number) {
    super(`the queue is full (${limit} requests waiting); retry later`);
    this.name = 'QueueFullError';
  }
}

export class QueueTimeoutError extends Error {
  constructor(readonly ms: number) {
    super(`timed out after ${ms} ms waiting for the model`);
    this.name = 'QueueTimeoutError';
  }
}

export class BatcherClosedError extends Error {
  constructor() {
    super('the server is shutting down');
    this.name = 'BatcherClosedError';
  }
}

/** What each caller gets back: its own output plus how its batch ran. */
export interface Batched<O> {
  output: O;
  batchSize: number;
  waitMs: number;
  runMs: number;
}

interface Pending<I, O> {
  item: I;
  submitted: number;
  resolve: (value: Batched<O>) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

export interface BatcherStats {
  queued: number;
  running: number;
  batches: number;
  items: number;
  refused: number;
  timedOut: number;
  /** batchSizes[n] = how many batches had n items. */
  batchSizes: number[];
}

export class MicroBatcher<I, O> {
  private readonly queue: Pending<I, O>[] = [];
  private running = 0;
  private waitTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private hurrying = false;
  private idleWaiters: (() => void)[] = [];
  private readonly counters = { batches: 0, items: 0, refused: 0, timedOut: 0 };
  private readonly sizes: number[];

  /** `run` must return one output per input, in order. */
  constructor(
    private readonly run: (items: I[]) => Promise<O[]>,
    private readonly options: BatcherOptions,
  ) {
    this.sizes = new Array<number>(options.maxBatch + 1).fill(0);
  }

  submit(item: I): Promise<Batched<O>> {
    if (this.closed) return Promise.reject(new BatcherClosedError());
    if (this.queue.length >= this.options.maxQueue) {
      this.counters.refused++;
      return Promise.reject(new QueueFullError(this.options.maxQueue));
    }
    return new Promise((resolve, reject) => {
      const pending: Pending<I, O> = {
        item,
        submitted: performance.now(),
        resolve,
        reject,
        timer: setTimeout(() => {
          const at = this.queue.indexOf(pending);
          if (at < 0) return;
          this.queue.splice(at, 1);
          this.counters.timedOut++;
          reject(new QueueTimeoutError(this.options.timeoutMs));
          this.notifyIdle();
        }, this.options.timeoutMs),
      };
      this.queue.push(pending);
      this.schedule();
    });
  }

  stats(): BatcherStats {
    return { queued: this.queue.length, running: this.running, ...this.counters, batchSizes: [...this.sizes] };
  }

  /** From now on, batches run without waiting for more requests (shutting down: nothing more is coming). */
  hurry(): void {
    this.hurrying = true;
    if (this.running === 0 && this.queue.length > 0) this.flush();
  }

  /** Refuses new work and resolves once everything already submitted has been answered. */
  async drain(): Promise<void> {
    this.closed = true;
    if (this.queue.length > 0 && this.running === 0) this.flush();
    if (this.queue.length === 0 && this.running === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private notifyIdle(): void {
    if (this.queue.length > 0 || this.running > 0) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private schedule(): void {
    // One batch at a time: the model is one session, and a second call would only queue inside onnxruntime.
    if (this.running > 0 || this.queue.length === 0) return;
    if (this.queue.length >= this.options.maxBatch || this.closed || this.hurrying) {
      this.flush();
      return;
    }
    if (this.waitTimer) return;
    const waited = performance.now() - this.queue[0]!.submitted;
    this.waitTimer = setTimeout(
      () => {
        this.waitTimer = null;
        if (this.running === 0) this.flush();
      },
      Math.max(0, this.options.maxWaitMs - waited),
    );
  }

  private flush(): void {
    if (this.waitTimer) {
      clearTimeout(this.waitTimer);
      this.waitTimer = null;
    }
    const batch = this.queue.splice(0, this.options.maxBatch);
    if (batch.length === 0) return;
    for (const p of batch) clearTimeout(p.timer);
    this.running++;
    this.counters.batches++;
    this.counters.items += batch.length;
    this.sizes[batch.length]!++;
    const started = performance.now();
    let outputs: Promise<O[]>;
    try {
      outputs = this.run(batch.map((p) => p.item));
    } catch (error) {
      outputs = Promise.reject(error);
    }
    outputs
      .then((values) => {
        if (values.length !== batch.length)
          throw new Error(`the model returned ${values.length} results for ${batch.length} inputs`);
        const runMs = performance.now() - started;
        batch.forEach((p, i) =>
          p.resolve({ output: values[i]!, batchSize: batch.length, waitMs: started - p.submitted, runMs }),
        );
      })
      .catch((error: unknown) => {
        for (const p of batch) p.reject(error instanceof Error ? error : new Error(String(error)));
      })
      .finally(() => {
        this.running--;
        this.schedule();
        this.notifyIdle();
      });
  }
}
