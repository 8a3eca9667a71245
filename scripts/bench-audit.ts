/**
 * The audit's cost against train-head's on the same cache: 10 k synthetic rows × 2048 dims × 120 classes (clustered,
 * with 5 % of labels flipped uniformly, so the flags' precision and recall come out too). Each job runs in its own
 * child process so its peak RSS is its own. BENCH_QUICK=1: 2 k rows × 512 dims × 20 classes.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { audit } from '../src/jobs/audit.js';
import { trainHead } from '../src/jobs/train-head.js';
import { ensureManifest } from '../src/store/manifest.js';
import { writePart } from '../src/store/part.js';
import { seededRandom } from '../src/util/random.js';

const self = fileURLToPath(import.meta.url);

interface Size {
  rows: number;
  dim: number;
  classes: number;
}

/** Class centres plus noise, non-negative like pooled CNN features; returns the flipped rows. */
export async function syntheticCache(dir: string, s: Size): Promise<number[]> {
  const random = seededRandom(3);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const classes = Array.from({ length: s.classes }, (_, c) => `class${c}`);
  await ensureManifest(dir, {
    format: 1,
    modelFile: 'synthetic',
    modelSha256: '0'.repeat(64),
    tappedTensor: 'synthetic',
    tap: {},
    preset: {},
    exif: 'ignore',
    icc: 'ignore',
    dim: s.dim,
    classes,
    createdAt: '',
    versions: {},
  });
  const centres = Float32Array.from({ length: s.classes * s.dim }, () => (random() < 0.5 ? 0 : 2 * random()));
  const features = new Float32Array(s.rows * s.dim);
  const labels = new Int32Array(s.rows);
  for (let r = 0; r < s.rows; r++) {
    const c = r % s.classes;
    labels[r] = c;
    for (let j = 0; j < s.dim; j++) features[r * s.dim + j] = Math.max(0, centres[c * s.dim + j]! + 0.9 * gauss());
  }
  const flipped: number[] = [];
  for (let r = 0; r < s.rows; r++)
    if (random() < 0.05) {
      labels[r] = (labels[r]! + 1 + Math.floor(random() * (s.classes - 1))) % s.classes;
      flipped.push(r);
    }
  await fs.mkdir(path.join(dir, 'train'), { recursive: true });
  await writePart(path.join(dir, 'train', 'part-bench-000000.arrow'), {
    meta: { split: 'train', shard: '0of1', runId: 'bench', dim: s.dim, failures: [], removed: [], provenance: {} },
    rows: Array.from({ length: s.rows }, (_, r) => ({
      path: `img/${r}.jpg`,
      label: labels[r]!,
      labelName: classes[labels[r]!]!,
      size: 1,
      mtimeMs: 1,
    })),
    features,
  });
  return flipped;
}

/** Child process: one job on the cache, its wall time and peak RSS as JSON on stdout. */
async function child(job: string, cache: string, flippedFile: string): Promise<void> {
  const started = performance.now();
  let extra: Record<string, unknown>;
  if (job === 'train-head') {
    const r = await trainHead({ cache, head: path.join(path.dirname(cache), 'head') });
    extra = {
      c: r.setting.c,
      normalize: r.setting.normalize,
      // Its selection of C alone: the audit repeats exactly this step (crossFitSeconds.selection).
      selectionSeconds: r.sweep?.seconds ?? r.stages?.sweep ?? null,
      solver: r.setting.solver,
      selection: r.sweep?.candidates.map((row) => ({ c: row.c, normalize: row.normalize, iterations: row.iterations })),
    };
  } else {
    // By path: the reader's row order need not be the order the rows were written in.
    const flipped = new Set(
      (JSON.parse(await fs.readFile(flippedFile, 'utf8')) as number[]).map((r) => `img/${r}.jpg`),
    );
    const r = await audit({ cache, out: null });
    const pr = (rows: string[]) => {
      const hits = rows.filter((x) => flipped.has(x)).length;
      return { precision: hits / Math.max(1, rows.length), recall: hits / flipped.size, flagged: rows.length };
    };
    extra = {
      crossFitSeconds: r.crossFit.seconds,
      temperature: { allRows: r.crossFit.temperatureAllRows, rounds: r.crossFit.calibrationRounds },
      knnSeconds: r.knnSeconds,
      confidentLearning: pr(r.all.filter((a) => a.confidentLearning).map((a) => a.path)),
      knn: pr(r.all.filter((a) => a.knnFlag).map((a) => a.path)),
      both: pr(r.all.filter((a) => a.confidentLearning && a.knnFlag).map((a) => a.path)),
    };
  }
  process.stdout.write(
    `${JSON.stringify({ seconds: (performance.now() - started) / 1000, peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024), ...extra })}\n`,
  );
}

export async function benchAudit(opts: { quick: boolean; log: (l: string) => void }): Promise<Record<string, unknown>> {
  const size: Size = opts.quick ? { rows: 2000, dim: 512, classes: 20 } : { rows: 10_000, dim: 2048, classes: 120 };
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-audit-'));
  try {
    const cache = path.join(dir, 'features');
    const flipped = await syntheticCache(cache, size);
    const flippedFile = path.join(dir, 'flipped.json');
    await fs.writeFile(flippedFile, JSON.stringify(flipped));
    const run = (job: string) => {
      opts.log(`bench-audit: ${job} on ${size.rows} × ${size.dim} × ${size.classes}`);
      // The machine is shared: the load average beside each job says how much of it the job had.
      const loadBefore = os.loadavg();
      const r = spawnSync(process.execPath, [self, job, cache, flippedFile], { encoding: 'utf8', maxBuffer: 1 << 26 });
      if (r.status !== 0) throw new Error(`${job} failed: ${r.stderr.slice(-2000)}`);
      const measured = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown> & { seconds: number };
      opts.log(`bench-audit: ${job} ${measured.seconds.toFixed(1)} s`);
      return { ...measured, loadBefore, loadAfter: os.loadavg() };
    };
    const trainHeadRun = run('train-head');
    const auditRun = run('audit');
    return {
      size,
      load: os.loadavg(),
      cpuModel: os.cpus()[0]?.model.trim(),
      cpus: os.availableParallelism(),
      trainHead: trainHeadRun,
      audit: auditRun,
      auditOverTrainHead: auditRun.seconds / trainHeadRun.seconds,
      goal: 'audit ≤ 2 × train-head on the same cache',
    };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === self && process.argv[2]) await child(process.argv[2], process.argv[3]!, process.argv[4]!);
// Alone: `node dist/scripts/bench-audit.js > audit.json` (BENCH_QUICK=1 for the small size).
else if (process.argv[1] === self) {
  const result = await benchAudit({
    quick: process.env.BENCH_QUICK === '1',
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}
