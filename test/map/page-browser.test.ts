import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import sharp from 'sharp';
import { parse } from 'csv-parse/sync';
import { writeMapPage } from '../../src/map/page.js';
import type { MapData, MapPageResult } from '../../src/map/data.js';
import { launchChromium, needsChromium, testOutputDir } from '../support/chromium.js';
import { needsShared, tempDir } from '../support/helpers.js';
import { CLASSES, monkeysGrid, monkeysValidation, wrongPredictions } from './fixtures.js';

const THUMBNAIL_SIZE = 96;

declare global {
  interface Window {
    featcacheMap: {
      lastFrame(): { mode: string; drawn: number; dimmed: number; outlined: number[]; ms: number };
      toClient(x: number, y: number): [number, number];
      selectedCount(): number;
      matchCount(): number;
      count: number;
    };
    pwned?: number;
  }
}

async function clientOf(page: Page, data: MapData, i: number): Promise<[number, number]> {
  return page.evaluate(([x, y]) => window.featcacheMap.toClient(x!, y!), [data.x[i]!, data.y[i]!]);
}

/** Mean absolute difference per channel between two raw RGB images of the same size. */
function meanDiff(a: Buffer, b: Buffer): number {
  assert.equal(a.length, b.length);
  let sum = 0;
  for (let k = 0; k < a.length; k++) sum += Math.abs(a[k]! - b[k]!);
  return sum / a.length;
}

async function thumbnailOf(file: string, width: number, height: number): Promise<Buffer> {
  return sharp(file).rotate().resize(width, height, { fit: 'fill' }).removeAlpha().raw().toBuffer();
}

describe(
  'map page in Chromium (monkeys on a known grid)',
  { skip: needsChromium() || needsShared(monkeysValidation) },
  () => {
    let dir: string;
    let out: string;
    let data: MapData;
    let result: MapPageResult;
    let browser: Browser;
    let page: Page;
    const requests: string[] = [];
    const errors: string[] = [];
    const shots = testOutputDir('map-page');

    before(async () => {
      dir = await tempDir('featcache-map-page-');
      out = path.join(dir, 'map.html');
      data = monkeysGrid();
      result = await writeMapPage(out, data, { thumbnails: true, thumbnailSize: THUMBNAIL_SIZE });
      await fs.mkdir(shots, { recursive: true });
      browser = await launchChromium();
      const context = await browser.newContext({
        viewport: { width: 1280, height: 800 },
        deviceScaleFactor: 1,
        acceptDownloads: true,
      });
      // Anything not file:// is recorded and refused, so a stray fetch cannot slip through on a connected machine.
      context.on('request', (r) => requests.push(r.url()));
      await context.route(/^(?!file:)/, (route) => route.abort());
      page = await context.newPage();
      page.on('pageerror', (e) => errors.push(String(e)));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      await page.goto(pathToFileURL(out).href);
      await page.waitForFunction(() => document.documentElement.dataset.drawn === '1');
    });
    after(async () => {
      await browser?.close();
      if (dir) await fs.rm(dir, { recursive: true, force: true });
    });

    it('opens from the file with every point drawn, and requests nothing but local files', async () => {
      const frame = await page.evaluate(() => window.featcacheMap.lastFrame());
      assert.equal(frame.drawn, data.count);
      assert.equal(await page.title(), data.title);
      assert.equal(await page.textContent('#title'), data.title);
      assert.equal(await page.evaluate(() => window.pwned), undefined, 'a hostile path or provenance ran as code');
      const legend = await page.$$eval('#legend li', (lis) =>
        lis.map((li) => [li.querySelector('.name')!.textContent, Number(li.querySelector('.count')!.textContent)]),
      );
      const counts = CLASSES.map((_, c) => data.label.filter((l) => l === c).length);
      assert.deepEqual(
        legend,
        CLASSES.map((name, c) => [name, counts[c]]),
      );
      const file = path.join(shots, 'map-by-label.png');
      await page.screenshot({ path: file });
      console.log(`# screenshot: ${file}`);
      assert.deepEqual(errors, []);
      assert.ok(requests.length > 0);
      assert.deepEqual(
        requests.filter((u) => !u.startsWith('file://')),
        [],
      );
    });

    it('hovering a point shows that image, its label and its path', async () => {
      const i = 23;
      const [cx, cy] = await clientOf(page, data, i);
      await page.mouse.move(cx + 1, cy + 1);
      await page.waitForSelector(`#tooltip[data-index="${i}"]`);
      const text = (await page.textContent('#tooltip'))!;
      assert.ok(text.includes(data.paths[i]!), text);
      assert.ok(text.includes(CLASSES[data.label[i]!]!), text);
      assert.ok(text.includes('audit score'), text);
      const thumb = page.locator('#tooltip .thumb');
      await page.waitForSelector('#tooltip .thumb[data-loaded="1"]');
      const file = path.join(shots, 'hover.png');
      await page.screenshot({ path: file });
      console.log(`# screenshot: ${file}`);
      // What the browser shows, pixel for pixel, against the image itself and against its neighbour on the grid.
      const shown = await sharp(await thumb.screenshot())
        .removeAlpha()
        .raw()
        .toBuffer({ resolveWithObject: true });
      const { width, height } = shown.info;
      assert.ok(Math.max(width, height) === THUMBNAIL_SIZE, `thumbnail ${width}×${height}`);
      const own = meanDiff(shown.data, await thumbnailOf(data.files[i]!, width, height));
      const other = meanDiff(shown.data, await thumbnailOf(data.files[i + 1]!, width, height));
      assert.ok(own < 12, `thumbnail differs from its image by ${own.toFixed(1)} per channel`);
      assert.ok(own * 3 < other, `own ${own.toFixed(1)} vs neighbour ${other.toFixed(1)}`);
      await page.mouse.move(5, 5);
    });

    it('a point without an image shows its (hostile) path as text and no thumbnail', async () => {
      const i = data.files.indexOf(null);
      const [cx, cy] = await clientOf(page, data, i);
      await page.mouse.move(cx, cy);
      await page.waitForSelector(`#tooltip[data-index="${i}"]`);
      assert.equal(await page.textContent('#tooltip .path'), data.paths[i]);
      assert.equal(await page.locator('#tooltip .thumb').count(), 0);
      assert.equal(await page.locator('#tooltip img').count(), 0);
      await page.mouse.move(5, 5);
    });

    it('a box selection (shift-drag) exports exactly the paths inside it', async () => {
      const box = { x0: 2.5, x1: 6.5, y0: 1.5, y1: 3.5 };
      const expected = data.paths.filter(
        (_, i) => data.x[i]! > box.x0 && data.x[i]! < box.x1 && data.y[i]! > box.y0 && data.y[i]! < box.y1,
      );
      assert.equal(expected.length, 8);
      const [ax, ay] = await page.evaluate((b) => window.featcacheMap.toClient(b.x0, b.y0), box);
      const [bx, by] = await page.evaluate((b) => window.featcacheMap.toClient(b.x1, b.y1), box);
      await page.keyboard.down('Shift');
      await page.mouse.move(ax, ay);
      await page.mouse.down();
      await page.mouse.move(bx, by, { steps: 6 });
      await page.mouse.up();
      await page.keyboard.up('Shift');
      assert.equal(await page.evaluate(() => window.featcacheMap.selectedCount()), expected.length);
      assert.match((await page.textContent('#selection-count'))!, /^8 selected/);
      const file = path.join(shots, 'box-selection.png');
      await page.screenshot({ path: file });
      console.log(`# screenshot: ${file}`);
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
      const csv = await fs.readFile(await download.path(), 'utf8');
      const rows = parse<Record<string, string>>(csv, { columns: true });
      assert.deepEqual(rows.map((r) => r.path).sort(), [...expected].sort());
      const row = rows.find((r) => r.path === expected[0])!;
      const i = data.paths.indexOf(expected[0]!);
      assert.equal(row.label, CLASSES[data.label[i]!]);
      assert.equal(row.prediction, CLASSES[data.predictions!.index[i]!]);
      await page.keyboard.press('Escape');
      assert.equal(await page.evaluate(() => window.featcacheMap.selectedCount()), 0);
    });

    it('a lasso (alt-drag) selects the points inside the drawn outline', async () => {
      // A diamond around (4, 2) reaching 1.5 grid steps: (4,2) and its four neighbours, and (3,1)…(5,3) lie outside.
      const diamond = [
        [4, 0.5],
        [5.5, 2],
        [4, 3.5],
        [2.5, 2],
      ];
      const corners: [number, number][] = [];
      for (const [x, y] of diamond)
        corners.push(await page.evaluate(([a, b]) => window.featcacheMap.toClient(a!, b!), [x!, y!]));
      await page.keyboard.down('Alt');
      await page.mouse.move(...corners[0]!);
      await page.mouse.down();
      for (const c of [...corners.slice(1), corners[0]!]) await page.mouse.move(...c, { steps: 4 });
      await page.mouse.up();
      await page.keyboard.up('Alt');
      assert.equal(await page.evaluate(() => window.featcacheMap.selectedCount()), 5);
      await page.keyboard.press('Escape');
    });

    it('colouring by prediction outlines exactly the wrong predictions, and only those', async () => {
      await page.click('#colors button[data-color="prediction"]');
      await page.waitForFunction(() => window.featcacheMap.lastFrame().mode === 'prediction');
      const frame = await page.evaluate(() => window.featcacheMap.lastFrame());
      const wrong = wrongPredictions(data);
      assert.ok(wrong.length > 5 && wrong.length < data.count / 2);
      assert.deepEqual(
        [...frame.outlined].sort((a, b) => a - b),
        wrong,
      );
      // And on the canvas: the white ring is there just outside a wrong point's disc, and not around a right one.
      // Looks along the row right of a point's centre, past its disc, for the white outline.
      const hasRing = async (i: number) => {
        const [cx, cy] = await clientOf(page, data, i);
        return page.evaluate(
          ([x, y]) => {
            const canvas = document.getElementById('points') as HTMLCanvasElement;
            const r = canvas.getBoundingClientRect();
            const px = Math.round(x! - r.left);
            const row = canvas.getContext('2d')!.getImageData(px + 1, Math.round(y! - r.top), 12, 1).data;
            for (let k = 0; k < 12; k++)
              if (row[4 * k] === 255 && row[4 * k + 1] === 255 && row[4 * k + 2] === 255) return true;
            return false;
          },
          [cx, cy],
        );
      };
      const right = data.label.findIndex((l, i) => i > 0 && !wrong.includes(i) && data.predictions!.index[i] === l);
      assert.equal(await hasRing(wrong[0]!), true);
      assert.equal(await hasRing(right), false);
      const legend = await page.$$eval('#legend li', (lis) => lis.map((li) => li.textContent));
      assert.ok(
        legend.some((t) => t.startsWith('wrong prediction') && t.endsWith(String(wrong.length))),
        String(legend),
      );
      const file = path.join(shots, 'map-by-prediction.png');
      await page.screenshot({ path: file });
      console.log(`# screenshot: ${file}`);
      await page.click('#colors button[data-color="label"]');
      await page.waitForFunction(() => window.featcacheMap.lastFrame().mode === 'label');
      assert.deepEqual((await page.evaluate(() => window.featcacheMap.lastFrame())).outlined, []);
      assert.equal(await hasRing(wrong[0]!), false, 'colouring by label outlines nothing');
    });

    it('hiding a class in the legend stops drawing its points', async () => {
      await page.click('#legend li[data-entry="1"]');
      await page.waitForFunction(
        (n) => window.featcacheMap.lastFrame().drawn === n,
        data.count - data.label.filter((l) => l === 1).length,
      );
      await page.click('#legend li[data-entry="1"]');
      await page.waitForFunction((n) => window.featcacheMap.lastFrame().drawn === n, data.count);
    });

    it('wheel zooms around the cursor, a drag pans, F fits again', async () => {
      const i = 34;
      const before = await clientOf(page, data, i);
      const other = await clientOf(page, data, 0);
      await page.mouse.move(before[0], before[1]);
      await page.mouse.wheel(0, -400);
      await page.waitForFunction(
        ([x, y, ox]) => Math.abs(window.featcacheMap.toClient(x!, y!)[0] - ox!) > 20,
        [data.x[0]!, data.y[0]!, other[0]],
      );
      const after = await clientOf(page, data, i);
      assert.ok(Math.hypot(after[0] - before[0], after[1] - before[1]) < 1, 'the point under the cursor stays put');
      const zoomed = await clientOf(page, data, 0);
      assert.ok(
        Math.hypot(zoomed[0] - before[0], zoomed[1] - before[1]) >
          Math.hypot(other[0] - before[0], other[1] - before[1]),
      );
      await page.mouse.down();
      await page.mouse.move(after[0] + 50, after[1] - 30, { steps: 5 });
      await page.mouse.up();
      const panned = await clientOf(page, data, i);
      assert.ok(Math.abs(panned[0] - after[0] - 50) < 1 && Math.abs(panned[1] - after[1] + 30) < 1);
      await page.mouse.move(5, 5);
      await page.keyboard.press('f');
      await page.waitForFunction(
        ([x, y, bx]) => Math.abs(window.featcacheMap.toClient(x!, y!)[0] - bx!) < 0.5,
        [data.x[i]!, data.y[i]!, before[0]],
      );
    });

    it('finding by path highlights the matches, which can become the selection', async () => {
      const part = path.dirname(data.paths[0]!); // one class folder: n0
      const expected = data.paths.filter((p) => p.toLowerCase().includes(part.toLowerCase())).length;
      assert.ok(expected > 1 && expected < data.count);
      await page.fill('#search', part);
      await page.waitForFunction((n) => window.featcacheMap.matchCount() === n, expected);
      assert.match((await page.textContent('#search-count'))!, new RegExp(`^${expected} paths match`));
      await page.click('#select-matches');
      assert.equal(await page.evaluate(() => window.featcacheMap.selectedCount()), expected);
      await page.click('#clear');
      await page.fill('#search', '');
      await page.waitForFunction(() => window.featcacheMap.matchCount() === 0);
    });

    it('Find highlights its matches also while a selection is active, and the selection shows again when Find is cleared', async () => {
      const [ax, ay] = await clientOf(page, data, 0);
      const [bx, by] = await clientOf(page, data, 12);
      await page.keyboard.down('Shift');
      await page.mouse.move(ax - 5, ay + 5);
      await page.mouse.down();
      await page.mouse.move(bx + 5, by - 5, { steps: 6 });
      await page.mouse.up();
      await page.keyboard.up('Shift');
      const selectedCount = await page.evaluate(() => window.featcacheMap.selectedCount());
      assert.ok(selectedCount > 0);
      const frame = () => page.evaluate(() => window.featcacheMap.lastFrame());
      await page.waitForFunction((c) => window.featcacheMap.lastFrame().dimmed === c, data.count - selectedCount);
      const part = path.dirname(data.paths[data.count - 3]!); // the last class folder, outside the box
      const expected = data.paths.filter((p) => p.toLowerCase().includes(part.toLowerCase())).length;
      await page.fill('#search', part);
      await page.waitForFunction((n) => window.featcacheMap.matchCount() === n, expected);
      await page.waitForFunction((c) => window.featcacheMap.lastFrame().dimmed === c, data.count - expected);
      const file = path.join(shots, 'find-over-selection.png');
      await page.screenshot({ path: file });
      console.log(`# screenshot: ${file}`);
      await page.fill('#search', '');
      await page.waitForFunction((c) => window.featcacheMap.lastFrame().dimmed === c, data.count - selectedCount);
      assert.equal(await page.evaluate(() => window.featcacheMap.selectedCount()), selectedCount);
      await page.click('#clear');
      await page.waitForFunction(() => window.featcacheMap.lastFrame().dimmed === 0);
      assert.equal((await frame()).drawn, data.count);
    });

    it('reports the thumbnails it made and the points without one', () => {
      assert.equal(result.thumbnailsMade, 60);
      assert.equal(result.thumbnailsReused, 0);
      assert.equal(result.thumbnailsMissing, 2);
      assert.deepEqual(errors, []);
    });
  },
);

/** A page of `count` points at the given coordinates, without images. */
function tinyMap(xs: number[], ys: number[], classes: string[]): MapData {
  const count = xs.length;
  return {
    title: `tiny ${count}`,
    provenance: {},
    classes,
    splits: ['train'],
    count,
    x: Float32Array.from(xs),
    y: Float32Array.from(ys),
    paths: xs.map((_, i) => `p${i}.jpg`),
    split: new Uint8Array(count),
    label: Int32Array.from(xs, (_, i) => i % classes.length),
    files: xs.map(() => null),
    predictions: null,
    audit: null,
    color: 'label',
  };
}

describe('map page in Chromium, degenerate layouts', { skip: needsChromium() }, () => {
  let browser: Browser;
  let dir: string;
  before(async () => {
    browser = await launchChromium();
    dir = await tempDir('featcache-map-tiny-');
  });
  after(async () => {
    await browser?.close();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  const cases: [string, MapData, RegExp][] = [
    ['one point', tinyMap([3.5], [-2], ['only']), /^1 point · 1 class$/],
    ['fifty points on one spot', tinyMap(Array(50).fill(5), Array(50).fill(5), ['a', 'b']), /^50 points · 2 classes$/],
  ];
  for (const [what, data, summary] of cases)
    it(`draws ${what}, says so in the singular where it is one, and hovers it`, async () => {
      const out = path.join(dir, `${data.count}.html`);
      await writeMapPage(out, data, { thumbnails: false, thumbnailSize: 64 });
      const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(pathToFileURL(out).href);
      await page.waitForFunction(() => document.documentElement.dataset.drawn === '1');
      assert.match((await page.textContent('#summary'))!, summary);
      assert.doesNotMatch((await page.textContent('#status'))!, /\b1 points\b/);
      assert.equal((await page.evaluate(() => window.featcacheMap.lastFrame())).drawn, data.count);
      const [x, y] = await clientOf(page, data, 0);
      assert.ok(Number.isFinite(x) && Number.isFinite(y), `point 0 at ${x}, ${y}`);
      await page.mouse.move(x, y);
      await page.waitForSelector('#tooltip:not([hidden])');
      assert.match((await page.textContent('#tooltip'))!, /p\d+\.jpg/);
      assert.deepEqual(errors, []);
      await page.close();
    });
});
