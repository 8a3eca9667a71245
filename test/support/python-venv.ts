/**
 * A Python venv for the tests that run README's Python snippets and the torch/torchvision references: built once per
 * machine outside the repository, keyed by a hash of the wheel list (test/support/python-requirements.txt) and the
 * interpreter's version, and reused by later runs. pip installs from whatever pip is configured to use (here a
 * local wheel index); nothing else is fetched.
 *
 * Two test files asking at once is safe: the builder holds a lock directory (mkdir is atomic) and the venv counts
 * as ready only once its marker file has been renamed into place; a builder that died leaves a lock whose pid is
 * gone, which the next caller takes over after removing the half-built venv.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './helpers.js';

const run = promisify(execFile);

/** Debian's interpreter, as the other Python references use: the venv is built from it, not from a pyenv shim. */
export const systemPython = '/usr/bin/python3';
export const requirementsFile = path.join(repoRoot, 'test/support/python-requirements.txt');
/** Python helpers the tests run inside the venv (imports torchvision around its CPU-torch gap, see there). */
export const pythonSupportDir = path.join(repoRoot, 'test/support/python');

/** Modules the tests import, with the wheel that provides each (for skip messages). */
const MODULE_WHEELS: Readonly<Record<string, string>> = Object.freeze({
  numpy: 'numpy',
  pandas: 'pandas',
  pyarrow: 'pyarrow',
  polars: 'polars',
  onnxruntime: 'onnxruntime',
  PIL: 'pillow',
  torch: 'torch',
  torchvision: 'torchvision',
  onnx: 'onnx',
});
export type PythonModule = keyof typeof MODULE_WHEELS;

const MARKER = 'featcache-venv.json';
const LOCK_WAIT_MS = 30 * 60_000;

export interface VenvInfo {
  /** The venv's interpreter. */
  python: string;
  dir: string;
  /** True when this process built it (cold), false when an existing one was reused (warm). */
  built: boolean;
  /** Seconds spent getting it ready in this process: building, or waiting for another builder, or checking. */
  seconds: number;
  /** Seconds the build took when it was made (from its marker). */
  buildSeconds: number;
  /** Requirement lines pip could not install. */
  failed: string[];
}

export interface PythonEnv {
  venv: VenvInfo | undefined;
  /** Why the venv could not be made, or undefined. */
  reason: string | undefined;
  /** `skip` option for a test that imports these modules in the venv: a reason naming what is missing, or false. */
  needs(...modules: PythonModule[]): string | false;
  /** Runs a Python file (or `-c` code) with the venv's interpreter; rejects with stderr on a non-zero exit. */
  run(args: string[], options?: { cwd?: string; timeoutMs?: number }): Promise<string>;
}

/** Where venvs live: FEATCACHE_TEST_VENV_ROOT, else the user's cache folder, else the OS temp folder. */
export function venvRoot(): string {
  if (process.env.FEATCACHE_TEST_VENV_ROOT) return path.resolve(process.env.FEATCACHE_TEST_VENV_ROOT);
  const cache = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  try {
    fs.mkdirSync(cache, { recursive: true });
    fs.accessSync(cache, fs.constants.W_OK);
    return path.join(cache, 'featcache-test');
  } catch {
    return path.join(os.tmpdir(), 'featcache-test');
  }
}

/** Requirement lines without comments or blanks. */
export function requirementLines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l.length > 0);
}

/** The venv's key: the wheel list and the interpreter it is built from. */
export function venvKey(requirements: string, pythonVersion: string): string {
  const wheels = requirementLines(requirements).join('\n');
  return createHash('sha256').update(`${pythonVersion}\n${wheels}`).digest('hex').slice(0, 16);
}

function lastLine(text: string): string {
  const lines = text.trim().split('\n');
  return (lines[lines.length - 1] ?? '').trim();
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readMarker(dir: string): Promise<{ seconds: number; failed: string[] } | undefined> {
  try {
    return JSON.parse(await fsp.readFile(path.join(dir, MARKER), 'utf8')) as { seconds: number; failed: string[] };
  } catch {
    return undefined;
  }
}

/** Takes the lock directory, or returns false while a live process holds it. A dead holder's lock is removed. */
async function tryLock(lock: string): Promise<boolean> {
  try {
    await fsp.mkdir(lock);
    await fsp.writeFile(path.join(lock, 'pid'), String(process.pid));
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const pid = Number(await fsp.readFile(path.join(lock, 'pid'), 'utf8').catch(() => ''));
  const age = Date.now() - (await fsp.stat(lock).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
  // A lock without a pid yet is a builder between mkdir and writeFile; give it a moment before calling it dead.
  const dead = pid > 0 ? !processAlive(pid) : age > 10_000;
  if (dead) await fsp.rm(lock, { recursive: true, force: true });
  return false;
}

async function pipInstall(python: string, args: string[]): Promise<void> {
  await run(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', ...args], {
    maxBuffer: 1 << 26,
    // Where pip also knows an unreachable index, fail over quickly instead of backing off five times per package.
    env: { ...process.env, PIP_RETRIES: process.env.PIP_RETRIES ?? '1', PIP_NO_INPUT: '1' },
  });
}

async function build(dir: string, requirements: string[]): Promise<{ seconds: number; failed: string[] }> {
  const start = performance.now();
  await fsp.rm(dir, { recursive: true, force: true });
  try {
    // Without wheels to install (the helper's own tests), pip is not needed and skipping it saves seconds.
    await run(systemPython, ['-m', 'venv', ...(requirements.length ? [] : ['--without-pip']), dir]);
  } catch (e) {
    await fsp.rm(dir, { recursive: true, force: true });
    const text = (e as { stderr?: string }).stderr ?? String(e);
    throw new Error(
      /ensurepip|venv/i.test(text)
        ? `needs python3-venv to make a venv (apt-get install python3-venv): ${lastLine(text)}`
        : `${systemPython} -m venv failed: ${lastLine(text)}`,
      { cause: e },
    );
  }
  const python = path.join(dir, 'bin/python');
  const failed: string[] = [];
  try {
    if (requirements.length) await pipInstall(python, requirements);
  } catch {
    // One wheel missing from the index should not skip the tests that need only the others.
    for (const r of requirements) {
      try {
        await pipInstall(python, [r]);
      } catch (e) {
        failed.push(`${r} (${lastLine((e as { stderr?: string }).stderr ?? String(e))})`);
      }
    }
  }
  const seconds = (performance.now() - start) / 1000;
  const tmp = path.join(dir, `${MARKER}.${process.pid}.tmp`);
  await fsp.writeFile(tmp, JSON.stringify({ seconds, failed, requirements, created: new Date().toISOString() }));
  await fsp.rename(tmp, path.join(dir, MARKER));
  return { seconds, failed };
}

/** Makes (or reuses) the venv for the current wheel list. Throws with a one-line reason when it cannot. */
export async function ensureVenv(options: { root?: string; requirements?: string } = {}): Promise<VenvInfo> {
  const start = performance.now();
  if (!fs.existsSync(systemPython)) throw new Error(`needs ${systemPython} (apt-get install python3)`);
  const version = (await run(systemPython, ['--version'])).stdout.trim();
  const requirementsText = await fsp.readFile(options.requirements ?? requirementsFile, 'utf8');
  const root = options.root ?? venvRoot();
  await fsp.mkdir(root, { recursive: true });
  const dir = path.join(root, `venv-${venvKey(requirementsText, version)}`);
  const lock = `${dir}.lock`;
  const ready = (built: boolean, m: { seconds: number; failed: string[] }): VenvInfo => ({
    python: path.join(dir, 'bin/python'),
    dir,
    built,
    seconds: (performance.now() - start) / 1000,
    buildSeconds: m.seconds,
    failed: m.failed,
  });
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    const existing = await readMarker(dir);
    if (existing) return ready(false, existing);
    if (await tryLock(lock)) {
      try {
        const again = await readMarker(dir); // another builder may have finished between our check and the lock
        return again ? ready(false, again) : ready(true, await build(dir, requirementLines(requirementsText)));
      } finally {
        await fsp.rm(lock, { recursive: true, force: true });
      }
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock} (another test run building the venv)`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/**
 * Which of the modules import in the venv: module → error line, or null when it imports. Importing torch and the
 * rest takes seconds (a minute on a loaded machine), and a built venv does not change, so the answer is kept in it.
 */
async function probeModules(venv: VenvInfo): Promise<Record<string, string | null>> {
  const file = path.join(venv.dir, 'featcache-probe.json');
  const kept = await fsp
    .readFile(file, 'utf8')
    .then((t) => JSON.parse(t) as Record<string, string | null>)
    .catch(() => undefined);
  if (kept && Object.keys(MODULE_WHEELS).every((m) => m in kept)) return kept;
  const probed = await probeNow(venv.python);
  const tmp = `${file}.${process.pid}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify(probed));
  await fsp.rename(tmp, file);
  return probed;
}

async function probeNow(python: string): Promise<Record<string, string | null>> {
  const { stdout } = await run(
    python,
    [path.join(pythonSupportDir, 'probe_modules.py'), ...Object.keys(MODULE_WHEELS)],
    {
      cwd: pythonSupportDir,
      maxBuffer: 1 << 20,
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    },
  );
  return JSON.parse(stdout) as Record<string, string | null>;
}

let memo: Promise<PythonEnv> | undefined;

/** The tests' Python environment, made once per process (and once per machine while the wheel list is unchanged). */
export function pythonEnv(): Promise<PythonEnv> {
  memo ??= (async () => {
    let venv: VenvInfo | undefined;
    let reason: string | undefined;
    let modules: Record<string, string | null> = {};
    try {
      venv = await ensureVenv();
      modules = await probeModules(venv);
    } catch (e) {
      reason = e instanceof Error ? e.message : String(e);
    }
    return {
      venv,
      reason,
      needs(...wanted) {
        if (reason) return `needs a Python venv for ${wanted.join(', ')}: ${reason}`;
        const missing = wanted.filter((m) => modules[m] !== null);
        if (missing.length === 0) return false;
        return `needs ${missing.map((m) => `${m} (wheel ${MODULE_WHEELS[m]}: ${modules[m] ?? 'not probed'})`).join(', ')} in the test venv ${venv?.dir}`;
      },
      async run(args, options = {}) {
        if (!venv) throw new Error(reason);
        try {
          const { stdout } = await run(venv.python, args, {
            cwd: options.cwd,
            timeout: options.timeoutMs ?? 10 * 60_000,
            maxBuffer: 1 << 28,
            env: { ...process.env, PYTHONPATH: pythonSupportDir, PYTHONDONTWRITEBYTECODE: '1' },
          });
          return stdout;
        } catch (e) {
          const err = e as { stderr?: string; message: string };
          throw new Error(`${args.join(' ').slice(0, 200)} failed:\n${err.stderr ?? err.message}`, { cause: e });
        }
      },
    } satisfies PythonEnv;
  })();
  return memo;
}
