import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  CUDA_PROVIDER_FILES,
  CUDA_REQUIREMENTS,
  checkCuda,
  cudaFailureReasons,
  describeCudaProblems,
  findLibraries,
  parseLdconfig,
} from '../../src/backbone/cuda-libs.js';
import { tempDir } from '../support/helpers.js';

const linux = process.platform === 'linux' ? false : 'the CUDA library check is Linux-only';

/** A folder holding empty files with the given names: the lookup only needs names to exist. */
async function fakeLibDir(names: string[]): Promise<string> {
  const dir = await tempDir('featcache-libs-');
  for (const name of names) await fs.writeFile(path.join(dir, name), '');
  return dir;
}

const LDCONFIG = [
  "3 libs found in cache `/etc/ld.so.cache'",
  '\tlibcudnn.so.9 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudnn.so.9',
  '\tlibcufft.so.11 (libc6) => /usr/lib32/libcufft.so.11',
  '\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1',
].join('\n');

describe('cuda-libs', () => {
  it('requires CUDA 12 and cuDNN 9 sonames for onnxruntime 1.30', () => {
    const sonames = CUDA_REQUIREMENTS.libraries.map((l) => l.soname);
    for (const soname of ['libcudart.so.12', 'libcublas.so.12', 'libcublasLt.so.12', 'libcudnn.so.9'])
      assert.ok(sonames.includes(soname), soname);
    assert.ok(Object.isFrozen(CUDA_REQUIREMENTS.libraries[0]));
  });

  it('parses ldconfig -p, keeping 64-bit entries only on x64', () => {
    const entries = parseLdconfig(LDCONFIG);
    assert.equal(entries.get('libcudnn.so.9'), '/usr/lib/x86_64-linux-gnu/libcudnn.so.9');
    assert.equal(entries.has('libcufft.so.11'), process.arch !== 'x64');
    assert.equal(entries.size, process.arch === 'x64' ? 2 : 3);
  });

  it('finds libraries in search dirs first, then in the loader cache', async () => {
    const dir = await fakeLibDir(['libcudart.so.12', 'libcudnn.so.9']);
    const found = findLibraries(['libcudart.so.12', 'libcudnn.so.9', 'libcuda.so.1', 'libcublasLt.so.12'], {
      searchDirs: [dir],
      ldconfigOutput: LDCONFIG,
    });
    assert.equal(found.get('libcudart.so.12'), path.join(dir, 'libcudart.so.12'));
    assert.equal(found.get('libcudnn.so.9'), path.join(dir, 'libcudnn.so.9'));
    assert.equal(found.get('libcuda.so.1'), '/usr/lib/x86_64-linux-gnu/libcuda.so.1');
    assert.equal(found.get('libcublasLt.so.12'), null);
  });

  it('names each absent library and how to get it, and nothing when all are present', { skip: linux }, async () => {
    const all = CUDA_REQUIREMENTS.libraries.map((l) => l.soname);
    const provider = await fakeLibDir([...CUDA_PROVIDER_FILES]);
    const complete = checkCuda({ searchDirs: [await fakeLibDir(all)], ldconfigOutput: null, providerDir: provider });
    assert.deepEqual(complete.missing, []);
    assert.deepEqual(describeCudaProblems(complete), []);

    const partial = checkCuda({
      searchDirs: [await fakeLibDir(all.filter((s) => s !== 'libcudnn.so.9' && s !== 'libcublasLt.so.12'))],
      ldconfigOutput: null,
      providerDir: provider,
    });
    assert.deepEqual(partial.missing.map((l) => l.soname).sort(), ['libcublasLt.so.12', 'libcudnn.so.9']);
    const problems = describeCudaProblems(partial);
    assert.equal(problems.length, 2);
    assert.match(
      problems.find((p) => p.startsWith('libcudnn.so.9'))!,
      /cuDNN 9 .*pip install nvidia-cudnn-cu12.*LD_LIBRARY_PATH/,
    );
    assert.match(
      problems.find((p) => p.startsWith('libcublasLt.so.12'))!,
      /CUDA 12 toolkit.*nvidia-cublas-cu12/,
    );
    // With the driver present, a --device failure names the same libraries.
    assert.deepEqual(cudaFailureReasons(partial), problems);
  });

  it('reports a missing provider with the install-cuda command', { skip: linux }, async () => {
    const check = checkCuda({
      searchDirs: [],
      ldconfigOutput: null,
      providerDir: await fakeLibDir(['libonnxruntime_providers_shared.so']),
    });
    assert.deepEqual(check.providerMissing, ['libonnxruntime_providers_cuda.so']);
    assert.match(
      describeCudaProblems(check)[0]!,
      /^the onnxruntime CUDA provider is not installed \(libonnxruntime_providers_cuda\.so absent from .*\); run 'npx featcache install-cuda'$/,
    );
    // With no library anywhere, every requirement is named, the driver included.
    assert.equal(check.missing.length, CUDA_REQUIREMENTS.libraries.length);
    assert.match(describeCudaProblems(check).join('\n'), /libcuda\.so\.1 \(NVIDIA driver\)/);
    // Without a driver, a --device failure says only that.
    assert.deepEqual(cudaFailureReasons(check), ['no NVIDIA driver (libcuda.so.1 not found by the loader)']);
  });
});
