import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { FeatcacheError } from '../../src/errors.js';
import { type OutputFile, openOutputFile, prepareOutputDir, writeOutputFile } from '../../src/util/output.js';
import { tempDir } from '../support/helpers.js';

async function writeAll(output: OutputFile, text: string): Promise<void> {
  const sink = await output.open();
  await sink.write(text);
  await sink.close();
}

describe('openOutputFile', () => {
  it('a new or regular file is replaced atomically: nothing visible until commit, nothing left on abort', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'out.txt');
    await fs.writeFile(file, 'old');
    const output = await openOutputFile(file);
    assert.equal(output.kind, 'file');
    await writeAll(output, 'new');
    assert.equal(await fs.readFile(file, 'utf8'), 'old', 'not visible before commit');
    await output.commit();
    assert.equal(await fs.readFile(file, 'utf8'), 'new');
    const aborted = await openOutputFile(file);
    await writeAll(aborted, 'half');
    await aborted.abort();
    assert.equal(await fs.readFile(file, 'utf8'), 'new');
    assert.deepEqual(await fs.readdir(dir), ['out.txt']);
  });

  it('a symlink is followed: the target changes, the link stays; a dangling link creates its target', async () => {
    const dir = await tempDir();
    await fs.mkdir(path.join(dir, 'real'));
    await fs.writeFile(path.join(dir, 'real', 'target.txt'), 'old');
    await fs.symlink('real/target.txt', path.join(dir, 'link.txt'));
    await writeOutputFile(path.join(dir, 'link.txt'), 'new');
    assert.ok((await fs.lstat(path.join(dir, 'link.txt'))).isSymbolicLink());
    assert.equal(await fs.readFile(path.join(dir, 'real', 'target.txt'), 'utf8'), 'new');
    await fs.symlink('real/missing.txt', path.join(dir, 'dangling.txt'));
    await writeOutputFile(path.join(dir, 'dangling.txt'), 'created');
    assert.ok((await fs.lstat(path.join(dir, 'dangling.txt'))).isSymbolicLink());
    assert.equal(await fs.readFile(path.join(dir, 'real', 'missing.txt'), 'utf8'), 'created');
  });

  it('a FIFO is written through to its reader and stays a FIFO; /dev/null stays a device', async () => {
    const dir = await tempDir();
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const reader = spawn('cat', [fifo]);
    let received = '';
    reader.stdout.on('data', (d) => (received += d));
    const closed = new Promise((resolve) => reader.on('close', resolve));
    const output = await openOutputFile(fifo);
    assert.equal(output.kind, 'stream');
    await writeAll(output, 'through the pipe');
    await output.commit();
    await closed;
    assert.equal(received, 'through the pipe');
    assert.ok((await fs.lstat(fifo)).isFIFO());
    await writeOutputFile('/dev/null', 'discarded');
    assert.ok((await fs.stat('/dev/null')).isCharacterDevice());
  });

  it('a directory is refused with one line naming the option', async () => {
    const dir = await tempDir();
    await assert.rejects(
      openOutputFile(dir, 'out'),
      (error: Error) =>
        error instanceof FeatcacheError && /^out: expected a file path .*a directory"$/.test(error.message),
    );
  });
});

describe('prepareOutputDir', () => {
  const marker = '.featcache-test.json';

  it('refuses a non-empty directory without the marker and keeps every file', async () => {
    const dir = await tempDir();
    await fs.writeFile(path.join(dir, 'thesis.txt'), 'mine');
    await fs.mkdir(path.join(dir, 'sub'));
    await assert.rejects(
      prepareOutputDir(dir, marker),
      (error: Error) =>
        error instanceof FeatcacheError && /^out: expected a new or empty directory.*thesis\.txt/.test(error.message),
    );
    assert.deepEqual((await fs.readdir(dir)).sort(), ['sub', 'thesis.txt']);
  });

  it('creates a new directory; on abort removes it again', async () => {
    const dir = path.join(await tempDir(), 'new');
    const output = await prepareOutputDir(dir, marker);
    await fs.writeFile(output.file('a.txt'), 'a');
    await output.abort();
    await assert.rejects(fs.stat(dir), { code: 'ENOENT' });
  });

  it("replaces only its own files: listed ones are replaced or removed, a user's file in between is kept", async () => {
    const dir = path.join(await tempDir(), 'out');
    const first = await prepareOutputDir(dir, marker);
    await fs.writeFile(first.file('a.txt'), 'a1');
    await fs.writeFile(first.file('b.txt'), 'b1');
    await first.commit();
    await fs.writeFile(path.join(dir, 'user.txt'), 'mine');
    const second = await prepareOutputDir(dir, marker);
    await fs.writeFile(second.file('a.txt'), 'a2');
    assert.equal(await fs.readFile(path.join(dir, 'a.txt'), 'utf8'), 'a1', 'not visible before commit');
    await second.commit();
    assert.deepEqual((await fs.readdir(dir)).sort(), [marker, 'a.txt', 'user.txt']);
    assert.equal(await fs.readFile(path.join(dir, 'a.txt'), 'utf8'), 'a2');
    assert.equal(await fs.readFile(path.join(dir, 'user.txt'), 'utf8'), 'mine');
  });

  it('a marker that lists paths outside the directory is not trusted', async () => {
    const dir = await tempDir();
    await fs.writeFile(path.join(dir, marker), JSON.stringify({ writtenBy: 'featcache', files: ['../escape'] }));
    await assert.rejects(prepareOutputDir(dir, marker), FeatcacheError);
  });
});

describe('writeOutputFile on a full disk', () => {
  // /dev/full answers every write with ENOSPC: a real full device, no mock.
  const skip = existsSync('/dev/full') ? false : 'no /dev/full on this system';

  it('names the option and the file, with the errno, instead of a bare ENOSPC', { skip }, async () => {
    await assert.rejects(writeOutputFile('/dev/full', 'x'.repeat(1 << 16), 'report'), (error: unknown) => {
      assert.ok(error instanceof FeatcacheError);
      assert.match(
        error.message,
        /^(--)?report \/dev\/full: cannot write \(ENOSPC\); what went through is incomplete$/,
      );
      assert.equal(error.exitCode, 1);
      return true;
    });
  });
});
