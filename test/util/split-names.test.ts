import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SPLIT_NAMES, splitAlias } from '../../src/util/split-names.js';

describe('split names', () => {
  it('a name finds the one present member of its family; an exact name, an ambiguous or unknown one stays', () => {
    assert.equal(splitAlias('train', ['training', 'validation']), 'training');
    assert.equal(splitAlias('val', ['training', 'validation']), 'validation');
    assert.equal(splitAlias('val', ['train', 'valid']), 'valid');
    assert.equal(splitAlias('validation', ['train', 'val']), 'val');
    assert.equal(splitAlias('test', ['testing']), 'testing');
    assert.equal(splitAlias('train', ['train', 'training']), 'train', 'the exact name wins');
    assert.equal(splitAlias('val', ['validation', 'valid']), 'val', 'two candidates: no guess');
    assert.equal(splitAlias('val', ['training', 'test']), 'val', 'no member present');
    assert.equal(splitAlias('holdout', ['training']), 'holdout', 'not a known name');
    assert.equal(splitAlias('train', ['val']), 'train', 'another family is never taken');
  });

  it('every family member marks a split folder', () => {
    for (const name of ['train', 'training', 'val', 'validation', 'valid', 'test', 'testing'])
      assert.ok(SPLIT_NAMES.includes(name), name);
  });
});
