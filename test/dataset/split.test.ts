import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inShard, parseShard, stratifiedSplit } from '../../src/dataset/split.js';

describe('stratifiedSplit', () => {
  it('takes ceil(n × fraction) items, allocated by class proportion', () => {
    const items = [...Array(97).keys()].map((i) => ({ id: `f${i}`, cls: i < 60 ? 'a' : i < 90 ? 'b' : 'c' }));
    const { train, val } = stratifiedSplit(items, (i) => i.cls, (i) => i.id, 0.1, 0);
    assert.equal(val.length, 10);
    assert.equal(train.length + val.length, 97);
    const count = (c: string) => val.filter((i) => i.cls === c).length;
    assert.deepEqual([count('a'), count('b'), count('c')], [6, 3, 1]);
  });

  it('moves few items when the dataset grows', () => {
    const items = [...Array(200).keys()].map((i) => ({ id: `f${i}`, cls: 'a' }));
    const before = new Set(stratifiedSplit(items, (i) => i.cls, (i) => i.id, 0.2, 0).val.map((i) => i.id));
    const grown = [...items, ...[...Array(10).keys()].map((i) => ({ id: `new${i}`, cls: 'a' }))];
    const after = stratifiedSplit(grown, (i) => i.cls, (i) => i.id, 0.2, 0).val.map((i) => i.id);
    const kept = after.filter((id) => before.has(id)).length;
    assert.ok(kept >= 36, `kept ${kept} of 40`);
  });
});

describe('shards', () => {
  it('parses K/N and refuses nonsense', () => {
    assert.deepEqual(parseShard('1/4'), { index: 1, count: 4 });
    assert.throws(() => parseShard('4/4'), /^FeatcacheError: shard: expected K\/N with 0 <= K < N/);
    assert.throws(() => parseShard('abc'), /^FeatcacheError: shard: expected K\/N/);
  });
  it('assigns each key to exactly one shard, independent of the other keys', () => {
    for (const key of ['a.jpg', 'dir/b.png', 'ü.jpg']) {
      assert.equal([0, 1, 2, 3].filter((index) => inShard({ index, count: 4 }, key)).length, 1);
    }
  });
});
