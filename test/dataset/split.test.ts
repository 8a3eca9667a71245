import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hashScore, inShard, parseShard, stratifiedSplit } from '../../src/dataset/split.js';

interface Thing {
  id: string;
  cls: string;
}

const things = (sizes: Record<string, number>): Thing[] =>
  Object.entries(sizes).flatMap(([cls, n]) => [...Array(n).keys()].map((i) => ({ id: `${cls}/${i}.jpg`, cls })));

const split = (items: Thing[], fraction: number, seed = 0) =>
  stratifiedSplit(
    items,
    (i) => i.cls,
    (i) => i.id,
    fraction,
    seed,
  );

/**
 * Hamilton's largest-remainder apportionment of ceil(n × fraction) seats, written independently of the code under
 * test: ties go to the alphabetically first class.
 */
function apportion(sizes: Record<string, number>, fraction: number): Record<string, number> {
  const n = Object.values(sizes).reduce((a, b) => a + b, 0);
  const seats = Math.ceil(n * fraction);
  const quotas = Object.entries(sizes).map(([cls, size]) => ({ cls, quota: (size * seats) / n }));
  const result = Object.fromEntries(quotas.map((q) => [q.cls, Math.floor(q.quota)]));
  let left = seats - Object.values(result).reduce((a, b) => a + b, 0);
  const byRemainder = [...quotas].sort((x, y) => (y.quota % 1) - (x.quota % 1) || (x.cls < y.cls ? -1 : 1));
  for (const q of byRemainder) if (left-- > 0) result[q.cls]! += 1;
  return result;
}

const perClass = (items: Thing[]) =>
  items.reduce<Record<string, number>>((acc, i) => ((acc[i.cls] = (acc[i.cls] ?? 0) + 1), acc), {});

describe('hashScore', () => {
  it("is sha256(seed NUL key) read as a fraction: pinned to Python's hashlib, so splits survive upgrades", () => {
    // int.from_bytes(hashlib.sha256(b"0\0a.jpg").digest()[:4], "big") / 2**32
    assert.equal(hashScore(0, 'a.jpg'), 0.8915075236000121);
    assert.equal(hashScore(42, 'dir/ü.png'), 0.19689065567217767);
    assert.equal(hashScore('shard', 'a.jpg'), 0.28608873882330954);
  });
});

describe('stratifiedSplit', () => {
  it('takes ceil(n × fraction) items, allocated by class proportion', () => {
    const items = [...Array(97).keys()].map((i) => ({ id: `f${i}`, cls: i < 60 ? 'a' : i < 90 ? 'b' : 'c' }));
    const { train, val } = split(items, 0.1);
    assert.equal(val.length, 10);
    assert.equal(train.length + val.length, 97);
    const count = (c: string) => val.filter((i) => i.cls === c).length;
    assert.deepEqual([count('a'), count('b'), count('c')], [6, 3, 1]);
  });

  it('per-class counts equal largest-remainder apportionment on many class mixes and fractions', () => {
    const mixes: Record<string, number>[] = [
      { a: 60, b: 30, c: 7 },
      { a: 1, b: 1, c: 1 },
      { x: 5, y: 5 },
      { m: 13, n: 2, o: 9, p: 4 },
      { only: 11 },
      { b: 3, a: 3, c: 4 },
    ];
    for (const sizes of mixes) {
      for (const fraction of [0.05, 0.2, 0.25, 0.5, 0.7]) {
        for (const seed of [0, 1, 2]) {
          const items = things(sizes);
          const { train, val } = split(items, fraction, seed);
          const what = `${JSON.stringify(sizes)} × ${fraction} (seed ${seed})`;
          assert.deepEqual(
            perClass(val),
            Object.fromEntries(Object.entries(apportion(sizes, fraction)).filter(([, v]) => v > 0)),
            what,
          );
          assert.deepEqual(
            [...train, ...val].map((i) => i.id).sort(),
            items.map((i) => i.id).sort(),
            `${what}: a partition`,
          );
        }
      }
    }
  });

  it('breaks equal remainders towards the alphabetically first class, whatever the input order', () => {
    for (const order of [
      ['c', 'b', 'a'],
      ['a', 'b', 'c'],
      ['b', 'c', 'a'],
    ]) {
      const items = order.map((cls) => ({ id: `${cls}.jpg`, cls }));
      assert.deepEqual(
        split(items, 0.2).val.map((i) => i.cls),
        ['a'],
        `one seat, order ${String(order)}`,
      );
      assert.deepEqual(
        split(items, 0.5)
          .val.map((i) => i.cls)
          .sort(),
        ['a', 'b'],
        `two seats, order ${String(order)}`,
      );
    }
  });

  it('within a class, validation takes the items with the lowest seeded hash, independent of input order', () => {
    const items = things({ a: 20, b: 10 });
    for (const seed of [0, 7]) {
      const { val } = split(items, 0.3, seed);
      for (const cls of ['a', 'b']) {
        const inClass = items.filter((i) => i.cls === cls);
        const lowest = [...inClass]
          .sort((x, y) => hashScore(seed, x.id) - hashScore(seed, y.id))
          .slice(0, val.filter((i) => i.cls === cls).length);
        assert.deepEqual(
          val
            .filter((i) => i.cls === cls)
            .map((i) => i.id)
            .sort(),
          lowest.map((i) => i.id).sort(),
          `class ${cls}, seed ${seed}`,
        );
      }
      const reversed = split([...items].reverse(), 0.3, seed)
        .val.map((i) => i.id)
        .sort();
      assert.deepEqual(reversed, val.map((i) => i.id).sort());
    }
    assert.notDeepEqual(split(items, 0.3, 0).val, split(items, 0.3, 7).val, 'the seed matters');
  });

  it('keeps train and val in the input order', () => {
    const items = things({ a: 10 });
    const { train, val } = split(items, 0.3);
    const position = (i: Thing) => items.indexOf(i);
    for (const part of [train, val])
      assert.deepEqual(
        part.map(position),
        part.map(position).sort((x, y) => x - y),
      );
  });

  it('moves few items when the dataset grows', () => {
    const items = [...Array(200).keys()].map((i) => ({ id: `f${i}`, cls: 'a' }));
    const before = new Set(split(items, 0.2).val.map((i) => i.id));
    const grown = [...items, ...[...Array(10).keys()].map((i) => ({ id: `new${i}`, cls: 'a' }))];
    const after = split(grown, 0.2).val.map((i) => i.id);
    const kept = after.filter((id) => before.has(id)).length;
    assert.ok(kept >= 36, `kept ${kept} of 40`);
  });
});

describe('shards', () => {
  it('parses K/N and refuses nonsense', () => {
    assert.deepEqual(parseShard('1/4'), { index: 1, count: 4 });
    assert.deepEqual(parseShard('0/1'), { index: 0, count: 1 });
    assert.deepEqual(parseShard('12/16'), { index: 12, count: 16 });
    for (const bad of ['4/4', '0/0', 'abc', 'x1/4', '1/4x', '1/4/5', '-1/4', '1/']) {
      assert.throws(() => parseShard(bad), /^FeatcacheError: shard: expected K\/N with 0 <= K < N/, bad);
    }
  });

  it('assigns each key to exactly one shard, independent of the other keys', () => {
    for (const key of ['a.jpg', 'dir/b.png', 'ü.jpg']) {
      assert.equal([0, 1, 2, 3].filter((index) => inShard({ index, count: 4 }, key)).length, 1);
    }
  });

  it('is floor(hashScore("shard", path) × N): pinned to Python\'s hashlib and balanced', () => {
    const keys = [...Array(12).keys()].map((k) => `img${k}.jpg`);
    const shardOf = (key: string) => [0, 1, 2, 3].find((index) => inShard({ index, count: 4 }, key));
    assert.deepEqual(keys.map(shardOf), [2, 1, 3, 1, 0, 1, 2, 2, 0, 2, 3, 2]);
    const many = [...Array(800).keys()].map((k) => `photos/${k}.jpg`);
    for (let index = 0; index < 4; index++) {
      const n = many.filter((key) => inShard({ index, count: 4 }, key)).length;
      assert.ok(n > 140 && n < 260, `shard ${index} of 4 holds ${n} of 800`);
    }
    assert.ok(
      many.every((key) => inShard({ index: 0, count: 1 }, key)),
      'one shard holds everything',
    );
  });
});
