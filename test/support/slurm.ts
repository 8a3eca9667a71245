/**
 * A throwaway one-node Slurm cluster on localhost for tests: its own munged (fresh key, private socket), slurmctld
 * and slurmd on free ports, all state under one temporary folder, no accounting. Installs nothing: where Debian's
 * slurm-wlm and munge are absent, or the daemons do not come up, `startSlurm` says why and the test skips.
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface SlurmCluster {
  dir: string;
  /** Environment for sbatch/squeue/scancel: points them at this cluster's slurm.conf. */
  env: NodeJS.ProcessEnv;
  cpus: number;
  stop(): Promise<void>;
}

const DAEMONS = ['munged', 'slurmctld', 'slurmd'];
const CLIENTS = ['sbatch', 'sinfo', 'squeue', 'scancel', 'scontrol'];

function which(name: string): string | null {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin', ...(process.env.PATH ?? '').split(':')]) {
    const candidate = path.join(dir, name);
    if (spawnSync('test', ['-x', candidate]).status === 0) return candidate;
  }
  return null;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function readPid(file: string): Promise<number | null> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

async function until(check: () => Promise<boolean>, timeoutMs: number, stepMs = 200): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return false;
}

/** Stops the daemons this cluster started (by their pid files), newest first. */
async function stopDaemons(dir: string): Promise<void> {
  for (const file of ['slurmd.pid', 'slurmctld.pid', 'munged.pid']) {
    const pid = await readPid(path.join(dir, file));
    if (pid === null || !alive(pid)) continue;
    process.kill(pid, 'SIGTERM');
    if (!(await until(async () => !alive(pid), 10_000, 100))) process.kill(pid, 'SIGKILL');
  }
}

export async function startSlurm(): Promise<SlurmCluster | { skip: string }> {
  const missing = [...DAEMONS, ...CLIENTS].filter((n) => which(n) === null);
  if (missing.length > 0)
    return {
      skip: `Slurm is not installed (${missing.join(', ')} missing; on Debian: apt-get install slurm-wlm munge)`,
    };
  const bin = (n: string) => which(n)!;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-slurm-'));
  const user = os.userInfo().username;
  const cpus = Math.max(2, os.availableParallelism());
  const [ctldPort, slurmdPort] = [await freePort(), await freePort()];
  const node = `fc${randomBytes(3).toString('hex')}`;
  const conf = path.join(dir, 'slurm.conf');
  const env = { ...process.env, SLURM_CONF: conf };
  const fail = async (why: string) => {
    const logs = await Promise.all(
      ['munged.log', 'slurmctld.log', 'slurmd.log'].map(async (f) => {
        const text = await fs.readFile(path.join(dir, f), 'utf8').catch(() => '');
        return text ? `${f}: ${text.trim().split('\n').slice(-3).join(' | ')}` : '';
      }),
    );
    await stopDaemons(dir);
    await fs.rm(dir, { recursive: true, force: true });
    return {
      skip: `Slurm could not start here: ${why}${logs.filter(Boolean).length ? ` (${logs.filter(Boolean).join('; ')})` : ''}`,
    };
  };
  try {
    await fs.mkdir(path.join(dir, 'state'));
    await fs.mkdir(path.join(dir, 'spool'));
    const key = path.join(dir, 'munge.key');
    await fs.writeFile(key, randomBytes(1024), { mode: 0o400 });
    const socket = path.join(dir, 'munge.socket');
    await run(
      bin('munged'),
      [
        '--force',
        `--key-file=${key}`,
        `--socket=${socket}`,
        `--pid-file=${path.join(dir, 'munged.pid')}`,
        `--log-file=${path.join(dir, 'munged.log')}`,
        `--seed-file=${path.join(dir, 'munged.seed')}`,
      ],
      { timeout: 15_000 },
    );
    await fs.writeFile(
      conf,
      [
        `ClusterName=${node}`,
        `SlurmctldHost=localhost(127.0.0.1)`,
        `SlurmUser=${user}`,
        `SlurmdUser=${user}`,
        'AuthType=auth/munge',
        'CredType=cred/munge',
        `AuthInfo=socket=${socket}`,
        `SlurmctldPort=${ctldPort}`,
        `SlurmdPort=${slurmdPort}`,
        `StateSaveLocation=${path.join(dir, 'state')}`,
        `SlurmdSpoolDir=${path.join(dir, 'spool')}`,
        `SlurmctldPidFile=${path.join(dir, 'slurmctld.pid')}`,
        `SlurmdPidFile=${path.join(dir, 'slurmd.pid')}`,
        `SlurmctldLogFile=${path.join(dir, 'slurmctld.log')}`,
        `SlurmdLogFile=${path.join(dir, 'slurmd.log')}`,
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'JobAcctGatherType=jobacct_gather/none',
        'AccountingStorageType=accounting_storage/none',
        'JobCompType=jobcomp/none',
        'SchedulerType=sched/builtin',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_CPU',
        'ReturnToService=2',
        'MpiDefault=none',
        'KillWait=10',
        `NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} State=UNKNOWN`,
        `PartitionName=test Nodes=${node} Default=YES MaxTime=INFINITE State=UP`,
        '',
      ].join('\n'),
    );
    await run(bin('slurmctld'), ['-f', conf, '-i'], { env, timeout: 15_000 });
    await run(bin('slurmd'), ['-f', conf, '-N', node], { env, timeout: 15_000 });
    const idle = await until(async () => {
      const out = await run(bin('sinfo'), ['-h', '-o', '%t'], { env, timeout: 5_000 }).catch(() => ({ stdout: '' }));
      return out.stdout.trim() === 'idle';
    }, 30_000);
    if (!idle) return await fail('the node did not become idle within 30 s');
  } catch (error) {
    return await fail((error as Error).message.split('\n')[0]!);
  }
  return {
    dir,
    env,
    cpus,
    stop: async () => {
      await stopDaemons(dir);
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** Runs a Slurm client command against the cluster; resolves with its stdout. */
export async function slurm(
  cluster: SlurmCluster,
  command: string,
  args: string[],
  timeoutMs = 120_000,
): Promise<string> {
  const { stdout } = await run(which(command) ?? command, args, { env: cluster.env, timeout: timeoutMs });
  return stdout;
}
