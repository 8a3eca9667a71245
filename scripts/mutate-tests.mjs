// Stryker's command runner calls this once per mutant (and once without one, the dry run). It runs only the
// tests of the module that holds the active mutant, so a run over several modules stays within ~20 minutes.
import { spawn } from 'node:child_process';
import console from 'node:console';
import process from 'node:process';
import { clearTimeout, setTimeout } from 'node:timers';
import { existsSync, readFileSync } from 'node:fs';
import { MODULE_TESTS, chosen } from '../stryker.config.mjs';

/** A test process running longer than this is taken for a mutant that loops forever (below Stryker's own limit). */
const LIMIT_MS = 45_000;

const compiled = (source) => source.replace(/^src\//, 'dist/src/').replace(/\.ts$/, '.js');

/** The mutated modules whose compiled file holds mutant `id` (all of them for the dry run). */
function modulesFor(id) {
  const modules = chosen.map((name) => MODULE_TESTS[name]);
  if (id === undefined) return modules;
  const call = new RegExp(`stry(?:MutAct|Cov)_\\w+\\([^)]*"${id}"`);
  return modules.filter((m) => existsSync(compiled(m.source)) && call.test(readFileSync(compiled(m.source), 'utf8')));
}

function run(files, patterns) {
  return new Promise((resolve) => {
    const narrow = patterns.map((p) => `--test-name-pattern=${p}`);
    // Own process group, so a looping mutant's test processes are stopped together, whoever gives up first.
    const child = spawn(
      process.execPath,
      ['--test', '--test-concurrency=1', '--test-reporter=dot', ...narrow, ...files],
      {
        stdio: 'inherit',
        detached: true,
      },
    );
    const stop = () => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(stop, LIMIT_MS);
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => (stop(), process.exit(1)));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(signal ? 1 : (code ?? 1));
    });
  });
}

const id = process.env.__STRYKER_ACTIVE_MUTANT__;
const modules = modulesFor(id);
const files = [...new Set(modules.flatMap((m) => m.tests))].filter((f) => existsSync(f));
// A name pattern narrows only when every module in this run has one (or it would hide another module's tests).
const patterns = modules.every((m) => m.namePattern) ? modules.map((m) => m.namePattern) : [];
if (files.length === 0) {
  console.error(`mutate-tests: no tests found for mutant ${id}`);
  process.exit(2);
}
process.exit(await run(files, patterns));
