/**
 * onnxruntime's intra-op thread spinning (`session.intra_op.allow_spinning`; FEATCACHE_ORT_SPIN=1 turns it on) for
 * extract end to end and for forward-only, on the machine as it is and beside a busy neighbour (one process spinning
 * on one core, as another job on a shared machine would), interleaved in one run so load drifts hit every cell alike.
 * Each figure is a child process at steady state (setup excluded), the model cache warmed first; medians of rounds.
 * Runnable alone: `node dist/scripts/bench-spinning.js [--quick]` prints JSON.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openBackbone } from '../src/backbone/index.js';
import { extract } from '../src/jobs/extract.js';
import { seededRandom } from '../src/util/random.js';

const self = fileURLToPath(import.meta.url);
const repo = path.resolve(path.dirname(self), '../..');
const shared = path.resolve(repo, '../shared');
const resnet = path.join(shared, 'fixtures/resnet50-tv-seed0/model.onnx');
const hymenoptera = path.join(shared, 'data/hymenoptera_data');
const threads = Math.min(os.availableParallelism(), 2);
const batchSize = 16;
const round = (x: number, digits = 3) => Number(x.toFixed(digits));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

type Kind = 'extract' | 'forward';

/** In the child: images per second at steady state, with whatever FEATCACHE_ORT_SPIN the parent set. */
async function measure(kind: Kind, batches: number): Promise<number> {
  if (kind === 'extract') {
    const cache = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-spin-'));
    try {
      const r = await extract({
        data: hymenoptera,
        split: 'val',
        model: resnet,
        cache,
        device: 'cpu',
        threads,
        batchSize,
      });
      return r.imagesPerSecond;
    } finally {
      await fs.rm(cache, { recursive: true, force: true });
    }
  }
  const backbone = await openBackbone(resnet, { device: { kind: 'cpu' }, threads });
  const random = seededRandom(1);
  const pixels = Float32Array.from({ length: batchSize * 3 * 224 * 224 }, () => random() * 2 - 1);
  await backbone.extract(pixels.slice(), batchSize, 224);
  const started = performance.now();
  for (let b = 0; b < batches; b++) await backbone.extract(pixels.slice(), batchSize, 224);
  const seconds = (performance.now() - started) / 1000;
  await backbone.close();
  return (batches * batchSize) / seconds;
}

function child(kind: Kind, spin: boolean, batches: number, env: NodeJS.ProcessEnv): number {
  const r = spawnSync(process.execPath, [self, '--child', kind, String(batches)], {
    encoding: 'utf8',
    env: { ...process.env, ...env, FEATCACHE_ORT_SPIN: spin ? '1' : '0' },
  });
  if (r.status !== 0) throw new Error(`${kind} (spin ${spin}) exited ${r.status}: ${r.stderr.slice(-400)}`);
  return Number(JSON.parse(r.stdout.trim().split('\n').at(-1)!).imagesPerSecond);
}

/** A neighbour that keeps one core busy until killed. */
function busyNeighbour(): ChildProcess {
  return spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
}

export async function benchSpinning(opts: {
  quick: boolean;
  log: (l: string) => void;
}): Promise<Record<string, unknown>> {
  if (
    !(await fs.access(resnet).then(
      () => true,
      () => false,
    ))
  )
    return { skipped: 'needs ../shared (ResNet50 fixture and hymenoptera)' };
  const cacheDir = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-spin-models-'));
  const env = { FEATCACHE_CACHE_DIR: cacheDir };
  const rounds = opts.quick ? 1 : 2;
  const batches = opts.quick ? 4 : 10;
  const loadBefore = os.loadavg();
  const cells = ['asIs', 'busyNeighbour'] as const;
  const runs: Record<string, Record<Kind, Record<'off' | 'on', number[]>>> = Object.fromEntries(
    cells.map((c) => [c, { extract: { off: [], on: [] }, forward: { off: [], on: [] } }]),
  );
  try {
    child('forward', false, 1, env); // warms the model cache: every measured child starts alike
    for (let r = 0; r < rounds; r++)
      for (const cell of cells) {
        opts.log(`spinning: round ${r + 1}/${rounds}, ${cell}`);
        const neighbour = cell === 'busyNeighbour' ? busyNeighbour() : null;
        try {
          for (const spin of [false, true])
            for (const kind of ['extract', 'forward'] as const)
              runs[cell]![kind][spin ? 'on' : 'off'].push(child(kind, spin, batches, env));
        } finally {
          neighbour?.kill();
        }
      }
  } finally {
    await fs.rm(cacheDir, { recursive: true, force: true });
  }
  const summary = (cell: string) => {
    const m = runs[cell]!;
    const med = (kind: Kind, spin: 'off' | 'on') => median(m[kind][spin]);
    return {
      ratioExtractSpinOnOverOff: round(med('extract', 'on') / med('extract', 'off'), 3),
      ratioForwardSpinOnOverOff: round(med('forward', 'on') / med('forward', 'off'), 3),
      ratioExtractOverForwardSpinOff: round(med('extract', 'off') / med('forward', 'off'), 3),
      ratioExtractOverForwardSpinOn: round(med('extract', 'on') / med('forward', 'on'), 3),
      imagesPerSecond: Object.fromEntries(
        (['extract', 'forward'] as const).map((k) => [
          k,
          { off: m[k].off.map((x) => round(x, 2)), on: m[k].on.map((x) => round(x, 2)) },
        ]),
      ),
    };
  };
  return {
    machine: `${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores, ${threads} onnxruntime threads`,
    loadAverage: { before: loadBefore.map((l) => round(l, 1)), after: os.loadavg().map((l) => round(l, 1)) },
    note: 'extract: hymenoptera val (153 images), steady state; forward: ResNet50 fixture, batch 16, random pixels',
    rounds,
    asIs: summary('asIs'),
    busyNeighbour: summary('busyNeighbour'),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === self) {
  const at = process.argv.indexOf('--child');
  if (at >= 0) {
    measure(process.argv[at + 1] as Kind, Number(process.argv[at + 2])).then(
      (imagesPerSecond) => process.stdout.write(`${JSON.stringify({ imagesPerSecond })}\n`),
      (error) => {
        process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
        process.exitCode = 1;
      },
    );
  } else {
    const quick = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';
    benchSpinning({ quick, log: (l) => process.stderr.write(`${l}\n`) }).then(
      (result) => process.stdout.write(`${JSON.stringify(result, null, 2)}\n`),
      (error) => {
        process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
        process.exitCode = 1;
      },
    );
  }
}
