/**
 * `featcache install-cuda`: fetches onnxruntime-node's CUDA 12 execution provider from NuGet into onnxruntime-node's
 * own bin folder, by running onnxruntime-node's installer with `ONNXRUNTIME_NODE_INSTALL=cuda12`.
 *
 * Why a command and not an install script: npm ≥ 11.19 blocks dependency install scripts not approved in the root
 * project's `allowScripts`, so neither onnxruntime-node's postinstall nor featcache's would run in a consumer
 * project; where they do run (older npm), they reach NuGet on every Linux x64 install, GPU or not. An explicit command
 * works the same from this repository and from any project that depends on featcache (`npx featcache install-cuda`).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import {
  CUDA_PROVIDER_FILES,
  type LibraryLookupOptions,
  checkCuda,
  describeCudaProblems,
  onnxruntimeBinDir,
} from '../backbone/cuda-libs.js';
import { FeatcacheError, invalidParameter, ExitCode } from '../errors.js';
import { withDefaults } from '../util/options.js';
import { DEFAULT_INSTALL_CUDA_OPTIONS } from './defaults.js';

export { DEFAULT_INSTALL_CUDA_OPTIONS };

export interface InstallCudaOptions {
  /** Fetch even when the provider files are already in place. */
  force: boolean;
  /** Only report what would run. */
  dryRun: boolean;
  /** Give up after this many milliseconds: onnxruntime-node's installer has no timeout of its own. */
  timeoutMs: number;
  /** onnxruntime-node's installer script; default: resolved from the onnxruntime-node featcache depends on. */
  installer?: string | undefined;
  /** Where the provider files must end up; default: onnxruntime-node's bin folder for this platform. */
  providerDir?: string | undefined;
  /** Environment for the installer; default: process.env. */
  env?: NodeJS.ProcessEnv | undefined;
  /** Library lookup for the post-install check (tests point it at fixture folders). */
  libraries?: LibraryLookupOptions | undefined;
  log?: ((line: string) => void) | undefined;
}

/** The only platform onnxruntime-node 1.30 fetches a CUDA provider for (its script/install-metadata.js). */
export const CUDA_PLATFORM = 'linux/x64';

export interface InstallCudaResult {
  status: 'installed' | 'present' | 'planned';
  providerDir: string;
  installer: string;
  /** The environment settings the installer gets (only those featcache sets). */
  installerEnv: Record<string, string>;
  /** Each CUDA library still missing after the install, and how to get it. Empty: ready for `--device cuda`. */
  problems: string[];
}

/**
 * The installer's environment. ONNXRUNTIME_NODE_INSTALL is read by onnxruntime-node's script directly, so it does
 * not depend on an npm config key; its downloads go through global-agent, which reads GLOBAL_AGENT_* variables, so
 * the usual HTTPS_PROXY / NO_PROXY are passed on under those names unless already set.
 */
export function installerEnvironment(env: NodeJS.ProcessEnv): Record<string, string> {
  const set: Record<string, string> = { ONNXRUNTIME_NODE_INSTALL: 'cuda12' };
  const proxy = env.GLOBAL_AGENT_HTTPS_PROXY ?? env.HTTPS_PROXY ?? env.https_proxy;
  const noProxy = env.GLOBAL_AGENT_NO_PROXY ?? env.NO_PROXY ?? env.no_proxy;
  if (proxy) set.GLOBAL_AGENT_HTTPS_PROXY = proxy;
  if (noProxy) set.GLOBAL_AGENT_NO_PROXY = noProxy;
  return set;
}

function resolveInstaller(): string {
  try {
    return createRequire(import.meta.url).resolve('onnxruntime-node/script/install');
  } catch {
    throw new FeatcacheError(
      'install-cuda: onnxruntime-node is not installed beside featcache; reinstall featcache',
      ExitCode.failed,
    );
  }
}

/** The last line of the installer's output that says what went wrong (its own error, or Node's for an uncaught one). */
function failureLine(output: string): string {
  const lines = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const last = (pattern: RegExp) => [...lines].reverse().find((l) => pattern.test(l));
  return (
    last(/^\w*Error\b/) ?? last(/ENOTFOUND|ECONNREFUSED|ETIMEDOUT|EACCES|HTTP status/) ?? lines.at(-1) ?? 'no output'
  );
}

function runInstaller(
  installer: string,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  log: (line: string) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [installer], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    // Progress ("Downloading …", "Extracting …") is passed on; stderr (a stack trace on failure) is only read for
    // the one line that says what went wrong.
    child.stdout.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      output += text;
      for (const line of text.split('\n')) if (line.trim()) log(`install-cuda: ${line.trim()}`);
    });
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new FeatcacheError(`install-cuda: could not start ${installer} (${error.message})`, ExitCode.failed));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const retry =
        "featcache still runs on CPU; retry with 'npx featcache install-cuda' (set HTTPS_PROXY behind a proxy)";
      if (timedOut)
        reject(
          new FeatcacheError(
            `install-cuda: the download from NuGet did not finish within ${timeoutMs / 1000} s; ${retry}`,
            ExitCode.failed,
          ),
        );
      else if (code !== 0)
        reject(
          new FeatcacheError(
            `install-cuda: could not fetch the CUDA provider from NuGet (${failureLine(output)}); ${retry}`,
            ExitCode.failed,
          ),
        );
      else resolve();
    });
  });
}

/**
 * Installs onnxruntime's CUDA 12 execution provider where onnxruntime-node loads it from, then checks the CUDA
 * libraries it needs and returns what is still missing (it does not fail for those: they are installed separately).
 *
 * @example
 * ```ts
 * import { installCuda } from 'featcache';
 * const r = await installCuda({ log: console.error });
 * if (r.problems.length > 0) console.error(r.problems.join('\n'));
 * ```
 */
export async function installCuda(options: Partial<InstallCudaOptions> = {}): Promise<InstallCudaResult> {
  const o: InstallCudaOptions = withDefaults(DEFAULT_INSTALL_CUDA_OPTIONS, options);
  const log = o.log ?? (() => {});
  if (!Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0)
    throw invalidParameter('timeoutMs', 'a positive number of milliseconds', o.timeoutMs);
  const platform = `${process.platform}/${process.arch}`;
  if (platform !== CUDA_PLATFORM) {
    throw new FeatcacheError(
      `install-cuda: onnxruntime-node offers its CUDA provider for ${CUDA_PLATFORM} only; this machine is ${platform}`,
      ExitCode.failed,
    );
  }
  const installer = o.installer ?? resolveInstaller();
  const providerDir = o.providerDir ?? onnxruntimeBinDir();
  if (!providerDir)
    throw new FeatcacheError(
      'install-cuda: onnxruntime-node is not installed beside featcache; reinstall featcache',
      ExitCode.failed,
    );
  const installerEnv = installerEnvironment(o.env ?? process.env);
  const check = () => checkCuda({ ...o.libraries, providerDir });
  const present = CUDA_PROVIDER_FILES.every((f) => existsSync(`${providerDir}/${f}`));
  const result = (status: InstallCudaResult['status']): InstallCudaResult => ({
    status,
    providerDir,
    installer,
    installerEnv,
    problems: status === 'planned' ? [] : describeCudaProblems(check()),
  });
  if (present && !o.force) return result('present');
  if (o.dryRun) return result('planned');
  log(`install-cuda: fetching onnxruntime's CUDA 12 execution provider from NuGet into ${providerDir}`);
  await runInstaller(installer, { ...(o.env ?? process.env), ...installerEnv }, o.timeoutMs, log);
  const stillMissing = CUDA_PROVIDER_FILES.filter((f) => !existsSync(`${providerDir}/${f}`));
  if (stillMissing.length > 0) {
    throw new FeatcacheError(
      `install-cuda: the installer finished but ${stillMissing.join(', ')} is not in ${providerDir}`,
      ExitCode.failed,
    );
  }
  return result('installed');
}
