import { createHash } from 'node:crypto';
import { invalidParameter } from '../errors.js';

/** A stable per-item score in [0, 1) from a seed and a key; adding items never changes other items' scores. */
export function hashScore(seed: number | string, key: string): number {
  const digest = createHash('sha256').update(`${seed}\0${key}`).digest();
  return digest.readUInt32BE(0) / 0x1_0000_0000;
}

/**
 * Stratified, seeded split, like scikit-learn's StratifiedShuffleSplit: the validation set has
 * ceil(n × fraction) items, allocated to classes by largest remainder so each class keeps its proportion.
 * Within a class, items are ranked by a seeded hash of their key, so adding images moves few others.
 */
export function stratifiedSplit<T>(
  items: readonly T[],
  classOf: (item: T) => string,
  keyOf: (item: T) => string,
  fraction: number,
  seed: number,
): { train: T[]; val: T[] } {
  const byClass = new Map<string, T[]>();
  for (const item of items) {
    const list = byClass.get(classOf(item)) ?? [];
    list.push(item);
    byClass.set(classOf(item), list);
  }
  const total = Math.ceil(items.length * fraction);
  const classes = [...byClass.keys()].sort();
  const exact = classes.map((c) => (byClass.get(c)!.length * total) / items.length);
  const counts = exact.map(Math.floor);
  const order = classes.map((_, i) => i).sort((a, b) => exact[b]! - counts[b]! - (exact[a]! - counts[a]!) || a - b);
  for (let k = 0, left = total - counts.reduce((a, b) => a + b, 0); k < order.length && left > 0; k++, left--) {
    counts[order[k]!]! += 1;
  }
  const val = new Set<T>();
  classes.forEach((c, i) => {
    const ranked = [...byClass.get(c)!].sort((a, b) => hashScore(seed, keyOf(a)) - hashScore(seed, keyOf(b)));
    for (const item of ranked.slice(0, counts[i])) val.add(item);
  });
  return { train: items.filter((i) => !val.has(i)), val: items.filter((i) => val.has(i)) };
}

export interface Shard {
  index: number;
  count: number;
}

export function parseShard(value: string): Shard {
  const match = /^(\d+)\/(\d+)$/.exec(value);
  const index = Number(match?.[1]);
  const count = Number(match?.[2]);
  if (!match || count < 1 || index >= count) {
    throw invalidParameter('shard', 'K/N with 0 <= K < N (e.g. 0/4)', value);
  }
  return { index, count };
}

/** Deterministic, disjoint and stable under additions: an item's shard depends on its path alone. */
export function inShard(shard: Shard, key: string): boolean {
  return shard.count === 1 || Math.floor(hashScore('shard', key) * shard.count) === shard.index;
}
