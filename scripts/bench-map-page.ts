/**
 * Map page benchmark: the page featcache map writes, opened in Debian's Chromium (headless, software rendering) with
 * 100 k synthetic clustered points against 1 k points in the same run. Measures writing the page, its first draw
 * after navigation, and the frame time while panning with the mouse (goal: ≤ 33 ms per frame at 100 k).
 * Runnable alone: `node dist/scripts/bench-map-page.js [baseline points, points…]` prints JSON; `npm run bench`
 * runs it as features.map-page. No thumbnails: their cost is sharp's,
 * once per image, not the page's.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Browser } from 'playwright-core';
import type { MapData } from '../src/map/data.js';
import { writeMapPage } from '../src/map/page.js';
import { seededRandom } from '../src/util/random.js';
import { toolVersions } from '../src/version.js';
import { CHROMIUM, CHROMIUM_ARGS } from '../test/support/chromium.js';

const VIEWPORT = { width: 1600, height: 1000 };
const PAN_STEPS = 120;
const CLASSES = 20;

/** What the page exposes (read-only) and what this benchmark adds to it. */
interface MapWindow {
  featcacheMap: { frameTimes(): number[] };
  benchStamps: number[];
}

/** Gaussian clusters, one per class (a UMAP-like picture), 8 % of predictions wrong, audit scores in [0, 1]. */
function syntheticMap(count: number): MapData {
  const random = seededRandom(count);
  const gauss = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
  const centres = Array.from({ length: CLASSES }, () => [random() * 40, random() * 40]);
  const x = new Float32Array(count);
  const y = new Float32Array(count);
  const label = new Int32Array(count);
  const index = new Int32Array(count);
  const probability = new Float32Array(count);
  const score = new Float32Array(count);
  const paths: string[] = [];
  const flags: string[][] = [];
  for (let i = 0; i < count; i++) {
    const c = Math.floor(random() * CLASSES);
    label[i] = c;
    x[i] = centres[c]![0]! + gauss() * 2;
    y[i] = centres[c]![1]! + gauss() * 2;
    const wrong = random() < 0.08;
    index[i] = wrong ? (c + 1 + Math.floor(random() * (CLASSES - 1))) % CLASSES : c;
    probability[i] = 0.4 + random() * 0.6;
    score[i] = wrong ? random() * 0.5 : 0.5 + random() * 0.5;
    flags.push(wrong ? ['label issue'] : []);
    paths.push(`class-${c}/image-${i}.jpg`);
  }
  return {
    title: `benchmark ${count} points`,
    provenance: { synthetic: true },
    classes: Array.from({ length: CLASSES }, (_, c) => `class-${c}`),
    splits: ['train', 'val'],
    count,
    x,
    y,
    paths,
    split: Uint8Array.from({ length: count }, (_, i) => (i % 5 === 0 ? 1 : 0)),
    label,
    files: new Array<string | null>(count).fill(null),
    predictions: { source: 'synthetic', index, probability },
    audit: { source: 'synthetic', score, flags },
    color: 'prediction',
  };
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

const round = (v: number) => Math.round(v * 100) / 100;

async function measure(browser: Browser, dir: string, count: number) {
  const data = syntheticMap(count);
  const out = path.join(dir, `map-${count}.html`);
  const writeStart = performance.now();
  await writeMapPage(out, data, { thumbnails: false, thumbnailSize: 96 });
  const writeMs = performance.now() - writeStart;
  const bytes = (await fs.stat(out)).size;

  const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const loadStart = performance.now();
  await page.goto(pathToFileURL(out).href);
  await page.waitForFunction(() => document.documentElement.dataset.drawn === '1', undefined, { timeout: 120_000 });
  const wallToFirstDraw = performance.now() - loadStart;
  const firstDraw = await page.evaluate(() => performance.getEntriesByName('featcache-map-first-draw')[0]?.startTime);

  // Pan: drag across the canvas while a rAF loop in the page stamps every frame.
  const box = (await page.locator('#overlay').boundingBox())!;
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  await page.evaluate(() => {
    const stamps: number[] = [];
    (window as unknown as MapWindow).benchStamps = stamps;
    const tick = (t: number) => {
      stamps.push(t);
      if (stamps.length < 100_000) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  const drawsBefore = await page.evaluate(() => (window as unknown as MapWindow).featcacheMap.frameTimes().length);
  await page.mouse.move(cx, cy);
  await page.mouse.down();
  const panStart = await page.evaluate(() => performance.now());
  for (let k = 1; k <= PAN_STEPS; k++) await page.mouse.move(cx + 300 * Math.sin(k / 15), cy + 200 * Math.sin(k / 23));
  await page.mouse.up();
  const panEnd = await page.evaluate(() => performance.now());
  const draws: number[] = await page.evaluate(() => (window as unknown as MapWindow).featcacheMap.frameTimes());
  const stamps: number[] = await page.evaluate(() => (window as unknown as MapWindow).benchStamps);
  const panDraws = draws.slice(Math.min(drawsBefore, draws.length - 1));
  const frames = stamps.filter((t) => t >= panStart && t <= panEnd);
  const intervals = frames.slice(1).map((t, k) => t - frames[k]!);
  await context.close();
  return {
    points: count,
    writePageMs: round(writeMs),
    pageBytes: bytes,
    firstDrawMsAfterNavigation: round(firstDraw ?? NaN),
    wallMsToFirstDraw: round(wallToFirstDraw),
    pan: {
      pointerMoves: PAN_STEPS,
      framesDrawn: panDraws.length,
      drawMs: {
        p50: round(quantile(panDraws, 0.5)),
        p95: round(quantile(panDraws, 0.95)),
        max: round(Math.max(...panDraws)),
      },
      frameIntervalMs: { p50: round(quantile(intervals, 0.5)), p95: round(quantile(intervals, 0.95)) },
      meanMsPerDrawnFrame: round((panEnd - panStart) / Math.max(1, panDraws.length)),
    },
  };
}

/** For `npm run bench` (features.map-page); `quick`: 20 k points instead of 100 k. */
export async function benchMapPage(opts: {
  quick: boolean;
  log: (l: string) => void;
}): Promise<Record<string, unknown>> {
  return run([1000, opts.quick ? 20_000 : 100_000], opts.log);
}

async function run(counts: number[], log: (l: string) => void): Promise<Record<string, unknown>> {
  const [baselineCount, ...rest] = counts;
  const { chromium } = await import('playwright-core');
  const loadAtStart = os.loadavg().map(round);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'featcache-bench-map-'));
  try {
    log(`map page: ${baselineCount} points (baseline)`);
    const baseline = await measure(browser, dir, baselineCount!);
    const runs: Awaited<ReturnType<typeof measure>>[] = [];
    for (const count of rest) {
      log(`map page: ${count} points`);
      runs.push(await measure(browser, dir, count));
    }
    const ratio = (r: (typeof runs)[number]) => ({
      points: r.points,
      firstDrawRatio: round(r.firstDrawMsAfterNavigation / baseline.firstDrawMsAfterNavigation),
      panDrawP50Ratio: round(r.pan.drawMs.p50 / baseline.pan.drawMs.p50),
      panFrameIntervalP50Ratio: round(r.pan.frameIntervalMs.p50 / baseline.pan.frameIntervalMs.p50),
    });
    return {
      benchmark: 'map-page',
      machine: {
        cpu: os.cpus()[0]?.model ?? 'unknown',
        cores: os.cpus().length,
        loadAverageAtStart: loadAtStart,
        loadAverageAtEnd: os.loadavg().map(round),
        note: 'shared machine: other jobs run beside this one; compare the ratios, not the absolute numbers',
      },
      chromium: browser.version(),
      viewport: VIEWPORT,
      versions: toolVersions(),
      goalFrameMs: 33,
      baseline,
      runs,
      ratiosToBaseline: runs.map(ratio),
    };
  } finally {
    await browser.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const counts = process.argv
    .slice(2)
    .map(Number)
    .filter((n) => n > 0);
  const report = await run(counts.length > 1 ? counts : [1000, 100_000], (l) => console.error(l));
  console.log(JSON.stringify(report, null, 2));
}
