import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { isImageName, isInside, walkImages } from '../../src/dataset/walk.js';
import { tempDir } from '../support/helpers.js';

async function touch(file: string): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, 'x');
}

describe('walkImages', () => {
  it('lists images sorted with / separators, skips hidden entries and reports non-images', async () => {
    const root = await tempDir();
    for (const f of ['b/2.png', 'a/1.JPG', 'a/sub/3.webp', 'notes.txt', '.hidden/4.jpg', 'a/.5.jpg'])
      await touch(path.join(root, f));
    const r = await walkImages(root);
    assert.deepEqual(r.images, ['a/1.JPG', 'a/sub/3.webp', 'b/2.png']);
    assert.deepEqual(r.skipped, [{ path: 'notes.txt', reason: 'not an image file extension' }]);
  });

  it('visits a directory linked twice or in a loop once, and reports broken links', async () => {
    const root = await tempDir();
    await touch(path.join(root, 'cats/1.jpg'));
    await fs.symlink(path.join(root, 'cats'), path.join(root, 'kittens'));
    await fs.symlink(root, path.join(root, 'cats', 'loop'));
    await fs.symlink(path.join(root, 'nowhere'), path.join(root, 'broken.jpg'));
    const r = await walkImages(root);
    assert.deepEqual(r.images, ['cats/1.jpg'], 'each real directory once');
    assert.deepEqual(
      r.skipped.map((s) => s.path),
      ['broken.jpg'],
    );
    assert.match(r.skipped[0]!.reason, /broken or looping symlink \(ENOENT\)/);
  });

  it('refuses a symlink that leads outside the root unless told to follow it', async () => {
    const root = await tempDir();
    const outside = await tempDir();
    await touch(path.join(root, 'in/1.jpg'));
    await touch(path.join(outside, 'o.jpg'));
    await fs.symlink(outside, path.join(root, 'out'));
    await assert.rejects(walkImages(root), /out: a symlink that leads outside the data folder/);
    assert.deepEqual((await walkImages(root, { followOutside: true })).images, ['in/1.jpg', 'out/o.jpg']);
  });

  it('isInside resolves links on both sides; isImageName goes by extension, any case', async () => {
    const root = await tempDir();
    await touch(path.join(root, 'a/1.jpg'));
    await fs.symlink(root, `${root}-alias`);
    assert.equal(await isInside(`${root}-alias`, path.join(root, 'a/1.jpg')), true);
    assert.equal(await isInside(path.join(root, 'a'), root), false);
    assert.equal(await isInside(root, `${root}x/1.jpg`), false, 'a sibling with the same prefix is outside');
    assert.deepEqual(['x.JPEG', 'x.tif', 'x.txt', 'x', 'x.jpg.bak'].map(isImageName), [
      true,
      true,
      false,
      false,
      false,
    ]);
  });
});
