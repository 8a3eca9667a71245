import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatFloat32, npyHeader } from '../../src/export/formats.js';

describe('formatFloat32', () => {
  it('round-trips every float32 exactly and stays short', () => {
    const values = [0.1, 1 / 3, 1e-10, 123456.789, -2.5e-7, 3.4028234663852886e38, 1.401298464324817e-45, 7];
    for (const v of values.map(Math.fround)) assert.equal(Math.fround(Number(formatFloat32(v))), v, String(v));
    assert.equal(formatFloat32(7), '7');
    assert.equal(formatFloat32(0.5), '0.5');
    assert.equal(formatFloat32(0), '0');
  });
});

describe('npyHeader', () => {
  it('writes a v1.0 header padded to 64 bytes', () => {
    const h = npyHeader('<f4', [3, 2048]);
    assert.equal(h.length % 64, 0);
    assert.equal(h.subarray(0, 6).toString('latin1'), '\x93NUMPY');
    assert.equal(h.readUInt16LE(8), h.length - 10);
    assert.match(h.toString('latin1'), /\{'descr': '<f4', 'fortran_order': False, 'shape': \(3, 2048\), \} *\n$/);
    assert.match(npyHeader('<i4', [5]).toString('latin1'), /'shape': \(5,\)/);
  });
});
