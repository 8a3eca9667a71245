/** `featcache install-cuda`: the CLI face of jobs/install-cuda.ts. */
import type { Argv } from 'yargs';
import { invalidParameter } from '../errors.js';
import { DEFAULT_INSTALL_CUDA_OPTIONS } from '../jobs/defaults.js';
import { defineCommand, emit, jsonOption } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

export const installCudaCommand = defineCommand({
  ...COMMAND_TEXT['install-cuda'],
  builder: (y: Argv) =>
    y
      .option('force', {
        type: 'boolean',
        default: DEFAULT_INSTALL_CUDA_OPTIONS.force,
        describe: 'fetch again even if the provider is installed',
      })
      .option('dry-run', {
        type: 'boolean',
        default: DEFAULT_INSTALL_CUDA_OPTIONS.dryRun,
        describe: 'only say what would be done',
      })
      .option('timeout', {
        type: 'number',
        default: DEFAULT_INSTALL_CUDA_OPTIONS.timeoutMs / 1000,
        describe: 'give up on the download after this many seconds',
      })
      .option('json', jsonOption),
  handler: async (a) => {
    if (!(a.timeout > 0)) throw invalidParameter('--timeout', 'a positive number of seconds', a.timeout);
    const log = (line: string) => process.stderr.write(`${line}\n`);
    const { installCuda } = await import('../jobs/install-cuda.js');
    const r = await installCuda({ force: a.force, dryRun: a['dry-run'], timeoutMs: a.timeout * 1000, log });
    emit(a.json, r, () => {
      const head = `install-cuda: CUDA provider ${r.status} in ${r.providerDir}`;
      if (r.status === 'planned')
        return `${head} (would run ${r.installer} with ${Object.entries(r.installerEnv)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ')})`;
      if (r.problems.length === 0)
        return `${head}; CUDA 12 and cuDNN 9 libraries found — check with: npx featcache-gpu-smoke`;
      return `${head}; before --device cuda works:\n${r.problems.map((p) => `  - ${p}`).join('\n')}`;
    });
  },
});
