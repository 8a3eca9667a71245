/**
 * The light command registry that `featcache --help` reads instead of the command files: it must say what each
 * command file says, and pick the command yargs will run.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { COMMANDS, commandName, commandsToLoad } from '../../src/cli/registry.js';
import { repoRoot, runCli } from '../support/helpers.js';

describe('command registry', () => {
  it('lists every command file once, with the command string and description the file itself declares', async () => {
    const files = (await fs.readdir(path.join(repoRoot, 'dist/src/cli')))
      .filter((f) => f.endsWith('.js') && !['flags.js', 'summary.js', 'registry.js', 'command-text.js'].includes(f))
      .map((f) => f.replace(/\.js$/, ''))
      .sort();
    assert.deepEqual(COMMANDS.map(commandName).sort(), files);
    for (const entry of COMMANDS) {
      const module = await entry.load();
      assert.equal(module.command, entry.command, commandName(entry));
      assert.equal(module.describe, entry.describe, commandName(entry));
      assert.equal(typeof module.builder, 'function', `${commandName(entry)} has its flags`);
    }
  });

  it('loads the command named first, none without a command, all when a flag before it may take a value', () => {
    const loads = (...args: string[]) => {
      const wanted = commandsToLoad(args);
      return wanted === 'all' ? 'all' : [...wanted];
    };
    assert.deepEqual(loads('predict', 'a.jpg', '--head', 'h'), ['predict']);
    assert.deepEqual(loads('--debug', 'fetch-model', 'resnet50'), ['fetch-model']);
    assert.deepEqual(loads('--help'), []);
    assert.deepEqual(loads(), []);
    assert.deepEqual(loads('frobnicate', 'extract'), []);
    assert.deepEqual(loads('--debug=true', 'similar', 'x.jpg'), ['similar']);
    assert.equal(loads('--cache', 'features', 'info'), 'all');
    assert.equal(loads('--', 'info'), 'all');
  });
});

describe('help and version switches', () => {
  it('-h is --help and -v is --version; a missing command is named once', async () => {
    const [long, short, version, v, none] = await Promise.all([
      runCli(['--help']),
      runCli(['-h']),
      runCli(['--version']),
      runCli(['-v']),
      runCli([]),
    ]);
    assert.equal(short.code, 0);
    assert.equal(short.stdout, long.stdout);
    assert.match(long.stdout, /featcache predict <inputs\.\.>/);
    const { version: expected } = JSON.parse(await fs.readFile(path.join(repoRoot, 'package.json'), 'utf8')) as {
      version: string;
    };
    assert.equal(version.stdout, `${expected}\n`);
    assert.equal(v.stdout, version.stdout);
    assert.equal(none.code, 2);
    assert.equal(none.stderr, 'featcache: give a command (see featcache --help)\n');
  });

  it('predict -h shows the flags of predict, read from its command file', async () => {
    const r = await runCli(['predict', '-h']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^featcache predict <inputs\.\.>/);
    assert.match(r.stdout, /--head\s+head directory written by train-head/);
  });
});
