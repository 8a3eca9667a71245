import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { openDataset } from '../../src/dataset/index.js';
import { expandInputs } from '../../src/jobs/predict.js';
import { tempDir } from '../support/helpers.js';

describe('.txt image lists (extract and predict read them alike)', () => {
  it('predict keeps absolute paths of a list as written and joins relative ones onto its folder', async () => {
    const dir = await tempDir();
    const elsewhere = await tempDir();
    const absolute = path.join(elsewhere, 'abs.jpg');
    const list = path.join(dir, 'lists', 'images.txt');
    await fs.mkdir(path.dirname(list));
    await fs.writeFile(list, `# a comment\n${absolute}\n\n  rel/b.jpg  \nhttps://example.com/c.jpg\n`);
    const { files } = await expandInputs([list]);
    assert.deepEqual(files, [absolute, path.join(dir, 'lists', 'rel', 'b.jpg'), 'https://example.com/c.jpg']);
  });

  it('extract resolves the same list lines to the same files', async () => {
    const dir = await tempDir();
    const elsewhere = await tempDir();
    const absolute = path.join(elsewhere, 'abs.jpg');
    const list = path.join(dir, 'images.txt');
    await fs.writeFile(list, `# a comment\n${absolute}\nrel/b.jpg\n`);
    const ds = await openDataset({ data: list, split: 'train', seed: 0 });
    const predicted = (await expandInputs([list])).files;
    assert.deepEqual(
      ds.items.map((i) => path.resolve(ds.root, i.path)),
      predicted.map((f) => path.resolve(f)),
    );
  });
});
