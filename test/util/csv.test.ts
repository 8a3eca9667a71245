import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { groupsCsv } from '../../src/jobs/duplicates.js';
import type { DuplicateGroup } from '../../src/neighbors/duplicates.js';
import { parse } from 'csv-parse/sync';
import { csvText, csvTextValue } from '../../src/util/csv.js';

describe('CSV text cells', () => {
  it("neutralises cells a spreadsheet would run as a formula (= + - @ tab CR) with a leading '", () => {
    assert.equal(csvText('=HYPERLINK("http://x")'), `"'=HYPERLINK(""http://x"")"`);
    assert.equal(csvText('+1'), "'+1");
    assert.equal(csvText('-2+3'), "'-2+3");
    assert.equal(csvText('@SUM(A1)'), "'@SUM(A1)");
    assert.equal(csvText('\tcmd'), "'\tcmd");
    assert.equal(csvText('cats/a=b.jpg'), 'cats/a=b.jpg', 'only a leading character is dangerous');
    assert.equal(csvText('a,b'), '"a,b"');
  });

  it('csvTextValue reads back what csvText wrote, guard and quoting included', () => {
    const texts = ['-1', '=HYPERLINK("http://x")', '+1', '@a', 'a,"b"', "it's", "'-already quoted", 'plain'];
    const rows: string[][] = parse(`${texts.map(csvText).join(',')}\n`);
    const row = rows[0];
    assert.deepEqual(row!.map(csvTextValue), texts.slice(0, 6).concat(["'-already quoted".slice(1), 'plain']));
  });

  it('duplicates --csv neutralises a path and a label but writes similarity as a number', () => {
    const groups = [
      {
        kind: 'near',
        leak: false,
        splits: ['train'],
        minSimilarity: -0.5,
        members: [
          { split: 'train', path: '=cmd|calc.jpg', label: '@evil', similarity: 1 },
          { split: 'train', path: 'b.jpg', label: 'cat', similarity: -0.5 },
        ],
      },
    ] as unknown as DuplicateGroup[];
    const lines = groupsCsv(groups).trim().split('\n');
    assert.match(lines[1]!, /,'=cmd\|calc\.jpg,'@evil,1\.0000,true$/);
    assert.match(lines[2]!, /,b\.jpg,cat,-0\.5000,false$/);
  });
});
