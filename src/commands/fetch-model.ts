/** `featcache fetch-model NAME`: download a pretrained backbone into models/, verified, atomic and resumable. */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import cliProgress from 'cli-progress';
import type { Argv, CommandModule } from 'yargs';
import { decodeModel } from '../backbone/graph.js';
import { resolveTap } from '../backbone/tap.js';
import { FeatcacheError, oneOf } from '../errors.js';
import { download } from '../fetch/download.js';
import { MODEL_NAMES, MODEL_SOURCES } from '../fetch/registry.js';
import { exists, sha256File } from '../util/fsx.js';
import { type Args, emit, jsonOption } from '../cli/flags.js';

export interface FetchOptions {
  name: string;
  dir: string;
  url?: string | undefined;
  sha256?: string | undefined;
  progress: boolean;
  retries?: number;
}

export interface FetchResult {
  name: string;
  file: string;
  sha256: string;
  bytes: number;
  status: 'downloaded' | 'present';
  verifiedBy: 'registry sha256' | '--sha256' | 'pinned sha256' | 'pinned now (first download)';
  resumedFrom: number;
  tap: string;
}

const pinFile = (file: string) => `${file}.sha256`;

async function readPin(file: string): Promise<string | null> {
  const text = await fs.readFile(pinFile(file), 'utf8').catch(() => null);
  return text ? (text.trim().split(/\s+/)[0] ?? null) : null;
}

/** The downloaded bytes must be an ONNX graph with a poolable node, or they are not a backbone. */
async function verifyStructure(file: string): Promise<string> {
  try {
    const model = decodeModel(await fs.readFile(file), file);
    return resolveTap(model.graph!, 'auto').tensor;
  } catch (error) {
    throw new FeatcacheError(`${file}: downloaded, but not a usable backbone (${(error as Error).message}); delete it and check the URL`, 1);
  }
}

export async function fetchModel(options: FetchOptions): Promise<FetchResult> {
  const source = MODEL_SOURCES[options.name];
  if (!source && !options.url) throw new FeatcacheError(`fetch-model: unknown model ${JSON.stringify(options.name)}; expected ${oneOf(MODEL_NAMES)}, or pass --url`);
  if (options.sha256 && !/^[0-9a-f]{64}$/i.test(options.sha256)) throw new FeatcacheError(`--sha256: expected 64 hex digits, got ${JSON.stringify(options.sha256)}`);
  const file = path.join(options.dir, source?.file ?? `${options.name}.onnx`);
  const pinned = await readPin(file);
  const expected = options.sha256 ?? source?.sha256 ?? pinned ?? undefined;
  const verifiedBy: FetchResult['verifiedBy'] = options.sha256 ? '--sha256' : source?.sha256 ? 'registry sha256' : pinned ? 'pinned sha256' : 'pinned now (first download)';
  if (await exists(file)) {
    const sha256 = await sha256File(file);
    if (expected && sha256 !== expected.toLowerCase()) {
      throw new FeatcacheError(`${file}: exists but its sha256 ${sha256.slice(0, 12)}… is not the expected ${expected.slice(0, 12)}…; delete it to download again`, 1);
    }
    if (!pinned) await fs.writeFile(pinFile(file), `${sha256}  ${path.basename(file)}\n`);
    return { name: options.name, file, sha256, bytes: (await fs.stat(file)).size, status: 'present', verifiedBy, resumedFrom: 0, tap: await verifyStructure(file) };
  }
  const url = options.url ?? source!.url;
  const bar = options.progress && process.stderr.isTTY
    ? new cliProgress.SingleBar({ format: `${options.name} |{bar}| {percentage}% {value}/{total} bytes | ETA {eta_formatted}`, stream: process.stderr }, cliProgress.Presets.shades_classic)
    : null;
  let started = false;
  const result = await download({
    url, dest: file, sha256: expected, size: options.url ? undefined : (source?.size ?? undefined), retries: options.retries ?? 5,
    onProgress: (received, total) => {
      if (!bar || total === null) return;
      if (!started) bar.start(total, received);
      started = true;
      bar.update(received);
    },
  }).finally(() => bar?.stop());
  let tap: string;
  try {
    tap = await verifyStructure(file);
  } catch (error) {
    await fs.rm(file, { force: true });
    throw error;
  }
  if (!expected) await fs.writeFile(pinFile(file), `${result.sha256}  ${path.basename(file)}\n`);
  return { name: options.name, file, sha256: result.sha256, bytes: result.bytes, status: 'downloaded', verifiedBy, resumedFrom: result.resumedFrom, tap };
}

export const fetchModelCommand: CommandModule = {
  command: 'fetch-model <name>',
  describe: `download a pretrained backbone (${MODEL_NAMES.join(', ')}) into models/`,
  builder: (y: Argv) =>
    y
      .positional('name', { type: 'string', describe: `model name: ${MODEL_NAMES.join(', ')}` })
      .option('dir', { type: 'string', default: 'models', describe: 'directory to save into' })
      .option('url', { type: 'string', describe: 'download from this URL instead (a mirror)' })
      .option('sha256', { type: 'string', describe: 'expected sha256 of the file (verified before it is kept)' })
      .option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as Args;
    const r = await fetchModel({ name: a.name, dir: a.dir, url: a.url, sha256: a.sha256, progress: !a.json });
    emit(a.json, r, () => `fetch-model ${r.name}: ${r.status} ${r.file} (${(r.bytes / 1e6).toFixed(1)} MB, sha256 ${r.sha256}, verified by ${r.verifiedBy}; tap ${r.tap})`);
  },
};
