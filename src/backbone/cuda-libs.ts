/**
 * What onnxruntime's CUDA execution provider needs from the machine, and which of it is missing. The provider
 * (`libonnxruntime_providers_cuda.so`, fetched by `featcache install-cuda`) is built against CUDA 12 and cuDNN 9 and
 * dlopens their libraries by soname; when one is absent onnxruntime reports only that the provider failed to load.
 * This module names each missing library and how to get it, so `--device cuda` and scripts/gpu-smoke can say so.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';

export interface CudaLibrary {
  /** The soname the dynamic loader looks for. */
  readonly soname: string;
  readonly what: string;
  /** Where it comes from: a system package or the CUDA toolkit. */
  readonly system: string;
  /** The NVIDIA pip wheel that ships it (its files land in site-packages/nvidia/<dir>/lib); null for the driver. */
  readonly pip: string | null;
}

/** Requirements of the onnxruntime-node 1.30 CUDA provider (onnxruntime's CUDA EP table: CUDA 12.x, cuDNN 9.x). */
export const CUDA_REQUIREMENTS = Object.freeze({
  onnxruntime: '1.30',
  cuda: '12.x',
  cudnn: '9.x',
  libraries: Object.freeze<CudaLibrary[]>([
    Object.freeze({
      soname: 'libcuda.so.1',
      what: 'NVIDIA driver',
      system: 'the NVIDIA driver (nvidia-smi must work; in containers, the NVIDIA container toolkit)',
      pip: null,
    }),
    Object.freeze({
      soname: 'libcudart.so.12',
      what: 'CUDA 12 runtime',
      system: 'the CUDA 12 toolkit (apt: cuda-cudart-12-x)',
      pip: 'nvidia-cuda-runtime-cu12',
    }),
    Object.freeze({
      soname: 'libcublas.so.12',
      what: 'cuBLAS 12',
      system: 'the CUDA 12 toolkit (apt: libcublas-12-x)',
      pip: 'nvidia-cublas-cu12',
    }),
    Object.freeze({
      soname: 'libcublasLt.so.12',
      what: 'cuBLASLt 12',
      system: 'the CUDA 12 toolkit (apt: libcublas-12-x)',
      pip: 'nvidia-cublas-cu12',
    }),
    Object.freeze({
      soname: 'libcufft.so.11',
      what: 'cuFFT (CUDA 12)',
      system: 'the CUDA 12 toolkit (apt: libcufft-12-x)',
      pip: 'nvidia-cufft-cu12',
    }),
    Object.freeze({
      soname: 'libcurand.so.10',
      what: 'cuRAND (CUDA 12)',
      system: 'the CUDA 12 toolkit (apt: libcurand-12-x)',
      pip: 'nvidia-curand-cu12',
    }),
    Object.freeze({
      soname: 'libcudnn.so.9',
      what: 'cuDNN 9',
      system: 'cuDNN 9 for CUDA 12 (apt: libcudnn9-cuda-12)',
      pip: 'nvidia-cudnn-cu12',
    }),
  ]),
});

/** The provider files onnxruntime-node loads from its own bin folder; `featcache install-cuda` puts them there. */
export const CUDA_PROVIDER_FILES: readonly string[] = Object.freeze([
  'libonnxruntime_providers_cuda.so',
  'libonnxruntime_providers_shared.so',
]);

export interface LibraryLookupOptions {
  /** `ldconfig -p` output; undefined runs ldconfig, null means no loader cache (tests point this at fixtures). */
  ldconfigOutput?: string | null | undefined;
  /** Directories searched before the loader cache; default: LD_LIBRARY_PATH's and onnxruntime-node's bin folder. */
  searchDirs?: readonly string[] | undefined;
}

export interface CudaCheck {
  /** onnxruntime-node's bin folder for this platform, where the provider must be. */
  providerDir: string | null;
  /** Provider files absent from `providerDir` (empty when installed). */
  providerMissing: string[];
  /** Libraries the loader cannot find. */
  missing: CudaLibrary[];
  /** Where each found library was found. */
  found: Record<string, string>;
}

/** onnxruntime-node's native folder (bin/napi-v6/<platform>/<arch>), or null where onnxruntime-node cannot be resolved. */
export function onnxruntimeBinDir(): string | null {
  try {
    const require = createRequire(import.meta.url);
    const root = path.dirname(require.resolve('onnxruntime-node/package.json'));
    return path.join(root, 'bin', 'napi-v6', process.platform, process.arch);
  } catch {
    return null;
  }
}

/** Parses `ldconfig -p` lines such as `\tlibcudart.so.12 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudart.so.12`. */
export function parseLdconfig(output: string): Map<string, string> {
  const entries = new Map<string, string>();
  for (const line of output.split('\n')) {
    const match = /^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)/.exec(line);
    // A 32-bit copy cannot satisfy a 64-bit process.
    if (match && (process.arch !== 'x64' || /x86-64/.test(match[2]!)) && !entries.has(match[1]!))
      entries.set(match[1]!, match[3]!);
  }
  return entries;
}

function runLdconfig(): string | null {
  for (const command of ['/sbin/ldconfig', '/usr/sbin/ldconfig', 'ldconfig']) {
    try {
      return execFileSync(command, ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
    } catch {
      // Not at this path: try the next.
    }
  }
  return null;
}

/** LD_LIBRARY_PATH's directories, in order, plus onnxruntime-node's bin folder (the provider's $ORIGIN). */
export function defaultSearchDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs = (env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d.length > 0);
  const bin = onnxruntimeBinDir();
  return bin ? [...dirs, bin] : dirs;
}

/** Where the dynamic loader would find each soname (searchDirs first, then the ldconfig cache), or null. */
export function findLibraries(
  sonames: readonly string[],
  options: LibraryLookupOptions = {},
): Map<string, string | null> {
  const dirs = options.searchDirs ?? defaultSearchDirs();
  const cache = parseLdconfig((options.ldconfigOutput === undefined ? runLdconfig() : options.ldconfigOutput) ?? '');
  return new Map(
    sonames.map((soname) => {
      const inDir = dirs.map((d) => path.join(d, soname)).find((file) => existsSync(file));
      return [soname, inDir ?? cache.get(soname) ?? null];
    }),
  );
}

/** Checks the provider files and every library in CUDA_REQUIREMENTS. Linux only: elsewhere nothing is reported missing. */
export function checkCuda(options: LibraryLookupOptions & { providerDir?: string | null | undefined } = {}): CudaCheck {
  const providerDir = options.providerDir === undefined ? onnxruntimeBinDir() : options.providerDir;
  if (process.platform !== 'linux') return { providerDir, providerMissing: [], missing: [], found: {} };
  const providerMissing = providerDir
    ? CUDA_PROVIDER_FILES.filter((f) => !existsSync(path.join(providerDir, f)))
    : [...CUDA_PROVIDER_FILES];
  const located = findLibraries(
    CUDA_REQUIREMENTS.libraries.map((l) => l.soname),
    options,
  );
  const missing = CUDA_REQUIREMENTS.libraries.filter((l) => !located.get(l.soname));
  const found = Object.fromEntries([...located].filter((e): e is [string, string] => e[1] !== null));
  return { providerDir, providerMissing, missing, found };
}

/** One sentence per problem, each naming the file and how to get it; empty when nothing is missing. */
export function describeCudaProblems(check: CudaCheck): string[] {
  const problems: string[] = [];
  if (check.providerMissing.length > 0) {
    problems.push(
      `the onnxruntime CUDA provider is not installed (${check.providerMissing.join(', ')} absent${check.providerDir ? ` from ${check.providerDir}` : ''}); run 'npx featcache install-cuda'`,
    );
  }
  for (const lib of check.missing) {
    const pip = lib.pip
      ? `, or 'pip install ${lib.pip}' and add its site-packages/nvidia/*/lib folder to LD_LIBRARY_PATH`
      : '';
    problems.push(`${lib.soname} (${lib.what}) not found by the loader: install ${lib.system}${pip}`);
  }
  return problems;
}

/**
 * The problems worth a `--device` failure line: on a machine with no NVIDIA driver, only that (listing seven CUDA
 * libraries there is noise on every `--device auto` run); otherwise everything describeCudaProblems finds.
 */
export function cudaFailureReasons(check: CudaCheck): string[] {
  if (check.missing.some((l) => l.soname === 'libcuda.so.1'))
    return ['no NVIDIA driver (libcuda.so.1 not found by the loader)'];
  return describeCudaProblems(check);
}
