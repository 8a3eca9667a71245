/**
 * Where an item's bytes come from: the extract loop asks a source whether a cached row is still current and then
 * pulls bytes for the items it must (re)extract. Local files, URLs and WebDataset tar shards are sources, so the
 * loop never knows which one it drives. Every source keeps a bounded number of images in memory.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Item } from './index.js';

/** What the cache records per row to decide later whether the row is still current. */
export interface Stamp {
  size: number;
  mtimeMs: number;
}

export interface ReadFailure {
  /** Which step failed: 'read' (local I/O or tar), 'fetch' (HTTP). Decoding failures are the caller's. */
  stage: string;
  message: string;
  /** HTTP status of the last attempt, when there was a response. */
  status?: number;
}

export type ReadOutcome =
  | { item: Item; bytes: Buffer; stamp: Stamp }
  | { item: Item; failure: ReadFailure; stamp: Stamp };

export interface ImageSource {
  readonly kind: 'files' | 'urls' | 'tar';
  /**
   * Whether the row cached for `item` with `recorded` is still current, so the item can be skipped. Files compare
   * size and mtime; tar members compare the member header; URLs are taken as immutable (as img2dataset does).
   */
  unchanged(item: Item, recorded: Stamp): Promise<boolean>;
  /**
   * Bytes of each item, once each, in an order of the source's choosing (completion order for URLs, stream order
   * for tars). Items the source cannot read come back as failures; the iterator itself only throws for bugs.
   * Breaking out of the loop stops all outstanding work.
   */
  read(items: readonly Item[]): AsyncIterable<ReadOutcome>;
  /** Releases connections and file handles. */
  close(): Promise<void>;
}

/**
 * Runs `work` over `inputs` with at most `concurrency` in flight and yields results as they complete. At most
 * `concurrency` results are held at once: a finished result waits in the buffer until the consumer pulls it, and no
 * new work starts while the buffer is full, so memory is bounded whatever the consumer's pace.
 */
export async function* mapConcurrent<T, R>(inputs: readonly T[], concurrency: number, work: (input: T) => Promise<R>): AsyncGenerator<R> {
  const limit = Math.max(1, Math.floor(concurrency));
  const ready: R[] = [];
  let next = 0;
  let running = 0;
  let wake: (() => void) | null = null;
  let stopped = false;
  let failed: { error: unknown } | null = null;
  const launch = () => {
    while (!stopped && !failed && running + ready.length < limit && next < inputs.length) {
      const input = inputs[next++]!;
      running++;
      work(input).then(
        (result) => {
          running--;
          ready.push(result);
          // Refill at once, so work continues while the consumer is busy with earlier results.
          launch();
          wake?.();
        },
        (error: unknown) => {
          running--;
          failed ??= { error };
          wake?.();
        },
      );
    }
  };
  try {
    launch();
    while (ready.length > 0 || running > 0 || next < inputs.length) {
      if (ready.length === 0 && !failed) await new Promise<void>((resolve) => (wake = resolve));
      wake = null;
      if (failed) throw (failed as { error: unknown }).error;
      while (ready.length > 0) {
        yield ready.shift()!;
        launch();
      }
      launch();
    }
  } finally {
    stopped = true;
  }
}

/** Local files under a root: today's behaviour (stat + readFile), read a few at a time. */
export class FileSource implements ImageSource {
  readonly kind = 'files';
  constructor(
    readonly root: string,
    readonly concurrency = 16,
  ) {}

  async unchanged(item: Item, recorded: Stamp): Promise<boolean> {
    const stat = await fs.stat(path.join(this.root, item.path)).catch(() => null);
    return stat !== null && stat.size === recorded.size && stat.mtimeMs === recorded.mtimeMs;
  }

  read(items: readonly Item[]): AsyncIterable<ReadOutcome> {
    return mapConcurrent(items, this.concurrency, async (item): Promise<ReadOutcome> => {
      const stamp = { size: 0, mtimeMs: 0 };
      try {
        const file = path.join(this.root, item.path);
        const stat = await fs.stat(file);
        stamp.size = stat.size;
        stamp.mtimeMs = stat.mtimeMs;
        const bytes = await fs.readFile(file);
        if (bytes.length === 0) throw new Error('empty file (0 bytes)');
        return { item, bytes, stamp };
      } catch (error) {
        return { item, failure: { stage: 'read', message: oneLine(error) }, stamp };
      }
    });
  }

  async close(): Promise<void> {}
}

export function oneLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/\s+/g, ' ').trim();
}
