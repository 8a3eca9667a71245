import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { tableFromIPC } from 'apache-arrow';
import { type PartContent, type Row, readPart, writePart } from '../../src/store/part.js';
import { decodePart, encodePart } from '../../src/store/part-arrow.js';
import { writeFileAtomic } from '../../src/util/fsx.js';
import { tempDir } from '../support/helpers.js';

function content(rows: Row[], dim = 4): PartContent {
  return {
    meta: {
      split: 'train',
      shard: '0of1',
      runId: 'r',
      dim,
      failures: [{ path: 'bad.jpg', stage: 'decode', message: 'truncated', size: 3, mtimeMs: 1 }],
      removed: ['gone.jpg'],
      provenance: { modelSha256: 'abc' },
    },
    rows,
    features: Float32Array.from({ length: rows.length * dim }, (_, i) => i / 7),
  };
}

const rows: Row[] = [
  { path: 'a/ü 1.jpg', label: 1, labelName: 'bees', size: 10, mtimeMs: 123.5 },
  { path: 'b.jpg', label: null, labelName: null, size: 20, mtimeMs: 456 },
];

describe('part files', () => {
  it('round-trip rows, float32 features, failures, removals and provenance', () => {
    const original = content(rows);
    const decoded = decodePart(encodePart(original), 'x.arrow');
    assert.deepEqual(decoded.rows, rows);
    assert.deepEqual(decoded.features, original.features);
    assert.deepEqual(decoded.meta, original.meta);
  });

  it('are plain Arrow IPC files with a fixed-size-list feature column and schema metadata', () => {
    const table = tableFromIPC(encodePart(content(rows)));
    assert.equal(table.numRows, 2);
    assert.deepEqual(
      table.schema.fields.map((f) => f.name),
      ['path', 'label', 'label_name', 'split', 'file_size', 'file_mtime_ms', 'feature', 'content_sha256'],
    );
    assert.equal(String(table.schema.fields[6]!.type), 'FixedSizeList[4]<Float32>');
    assert.equal(JSON.parse(table.schema.metadata.get('featcache')!).provenance.modelSha256, 'abc');
    assert.equal(table.getChild('split')!.get(0), 'train');
  });

  it('hold zero rows (a batch where every image failed)', () => {
    const decoded = decodePart(encodePart(content([])), 'x.arrow');
    assert.equal(decoded.rows.length, 0);
    assert.equal(decoded.meta.failures.length, 1);
  });

  it('are written atomically: a failing write leaves the old file and no temporary', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'part-1.arrow');
    await writePart(file, content(rows));
    const before = await fs.readFile(file);
    const diskFull = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    await assert.rejects(
      writeFileAtomic(file, async (tmp) => {
        await fs.writeFile(tmp, before.subarray(0, 100));
        throw diskFull;
      }),
      /ENOSPC/,
    );
    assert.deepEqual(await fs.readFile(file), before);
    assert.deepEqual((await fs.readdir(dir)).sort(), ['part-1.arrow', 'part-1.index.json']);
    assert.equal((await readPart(file)).rows.length, 2);
  });
});
