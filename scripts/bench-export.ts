/**
 * Export benchmark: rows/s and MB/s of parquet and arrow against npy (raw float32 bytes, the baseline) on the same
 * synthetic cache in the same run, and each format's peak RSS at two cache sizes, each export in its own process so
 * its peak is its own. Streaming means the larger cache's peak stays close to the smaller one's.
 *   node dist/scripts/bench-export.js [--quick]   prints one JSON object.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportSplit } from '../src/jobs/export.js';
import { ensureManifest } from '../src/store/manifest.js';
import { writePart } from '../src/store/part.js';
import { seededRandom } from '../src/util/random.js';

const self = fileURLToPath(import.meta.url);
const FORMATS = ['npy', 'parquet', 'arrow'] as const;
const DIM = 512;
const PART_ROWS = 1000;

/** A cache of `rows` synthetic 512-d rows (40% zeros, like pooled ReLU features) in parts of PART_ROWS. */
async function syntheticCache(dir: string, rows: number): Promise<void> {
  await ensureManifest(dir, {
    format: 1,
    modelFile: 'synthetic',
    modelSha256: '0'.repeat(64),
    tappedTensor: 'synthetic',
    tap: {},
    preset: {},
    exif: 'ignore',
    icc: 'ignore',
    dim: DIM,
    classes: ['a', 'b'],
    createdAt: '',
    versions: {},
  });
  await fs.mkdir(path.join(dir, 'train'), { recursive: true });
  const random = seededRandom(2);
  for (let p = 0; p * PART_ROWS < rows; p++) {
    const n = Math.min(PART_ROWS, rows - p * PART_ROWS);
    const features = Float32Array.from({ length: n * DIM }, () => (random() < 0.4 ? 0 : random() * 4));
    const partRows = Array.from({ length: n }, (_, i) => ({
      path: `img/${p * PART_ROWS + i}.jpg`,
      label: i % 2,
      labelName: i % 2 ? 'b' : 'a',
      size: 1,
      mtimeMs: 1,
    }));
    await writePart(path.join(dir, 'train', `part-${String(p).padStart(15, '0')}-0of1-1-000000.arrow`), {
      meta: { split: 'train', shard: '0of1', runId: 'bench', dim: DIM, failures: [], removed: [], provenance: {} },
      rows: partRows,
      features,
    });
  }
}

/** One export in this process: its numbers and this process's peak RSS. */
async function child(cache: string, format: string, out: string): Promise<void> {
  const r = await exportSplit({ cache, split: 'train', format: format as (typeof FORMATS)[number], out });
  process.stdout.write(
    `${JSON.stringify({ rows: r.rows, bytes: r.bytes, seconds: r.seconds, peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024) })}\n`,
  );
}

function runChild(
  cache: string,
  format: string,
  out: string,
): { rows: number; bytes: number; seconds: number; peakRssMb: number } {
  const c = spawnSync(process.execPath, [self, '--child', cache, format, out], { encoding: 'utf8' });
  if (c.status !== 0) throw new Error(`export ${format}: ${c.stderr.trim().split('\n').at(-1)}`);
  return JSON.parse(c.stdout.trim().split('\n').at(-1)!);
}

export async function benchExport(opts: {
  quick: boolean;
  log: (l: string) => void;
}): Promise<Record<string, unknown>> {
  const sizes = opts.quick ? [4_000, 16_000] : [20_000, 80_000];
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-export-'));
  const result: Record<string, unknown> = {
    dim: DIM,
    partRows: PART_ROWS,
    sizes,
    baseline: 'npy (raw float32 + int32 + paths)',
    machine: `${os.cpus().length} cores, load ${os.loadavg()[0]!.toFixed(1)}`,
  };
  try {
    const bySize: Record<
      string,
      Record<string, { rowsPerSecond: number; mbPerSecond: number; megabytes: number; peakRssMb: number }>
    > = {};
    for (const rows of sizes) {
      const cache = path.join(root, `cache-${rows}`);
      opts.log(`bench-export: writing a ${rows}-row cache`);
      await syntheticCache(cache, rows);
      bySize[rows] = {};
      for (const format of FORMATS) {
        const r = runChild(cache, format, path.join(root, `out-${rows}.${format}`));
        bySize[rows][format] = {
          rowsPerSecond: Math.round(r.rows / r.seconds),
          mbPerSecond: Number((r.bytes / 1e6 / r.seconds).toFixed(1)),
          megabytes: Number((r.bytes / 1e6).toFixed(1)),
          peakRssMb: r.peakRssMb,
        };
        opts.log(`bench-export: ${rows} rows ${format}: ${JSON.stringify(bySize[rows][format])}`);
      }
      await fs.rm(cache, { recursive: true, force: true });
    }
    const [small, large] = sizes.map((s) => bySize[s]!);
    result.results = bySize;
    result.ratios = Object.fromEntries(
      FORMATS.filter((f) => f !== 'npy').map((f) => [
        f,
        {
          rowsPerSecondVsNpy: Number((large![f]!.rowsPerSecond / large!.npy!.rowsPerSecond).toFixed(2)),
          mbPerSecondVsNpy: Number((large![f]!.mbPerSecond / large!.npy!.mbPerSecond).toFixed(2)),
          sizeVsNpy: Number((large![f]!.megabytes / large!.npy!.megabytes).toFixed(2)),
        },
      ]),
    );
    // 4× the rows: a streaming export's peak RSS should barely move.
    result.peakRssLargeOverSmall = Object.fromEntries(
      FORMATS.map((f) => [f, Number((large![f]!.peakRssMb / small![f]!.peakRssMb).toFixed(2))]),
    );
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
  return result;
}

if (process.argv[1] === self) {
  if (process.argv[2] === '--child') await child(process.argv[3]!, process.argv[4]!, process.argv[5]!);
  else
    process.stdout.write(
      `${JSON.stringify(await benchExport({ quick: process.argv.includes('--quick'), log: (l) => process.stderr.write(`${l}\n`) }))}\n`,
    );
}
