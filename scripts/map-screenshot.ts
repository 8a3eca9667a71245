/**
 * A screenshot of a map page for the README: opens the page in Debian's Chromium, picks a colouring, hovers one point
 * so its thumbnail shows, and writes a palette PNG.
 * `node dist/scripts/map-screenshot.js map.html docs/map-monkeys.png [--color label] [--hover 700]`
 */
import * as fs from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import * as path from 'node:path';
import sharp from 'sharp';
import { parseArgs } from 'node:util';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { color: { type: 'string', default: 'label' }, hover: { type: 'string' } },
});
const [page, png] = positionals;
if (!page || !png)
  throw new Error('usage: map-screenshot PAGE.html OUT.png [--color label|prediction|audit] [--hover N]');

const { chromium } = await import('playwright-core');
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu'],
});
try {
  const tab = await browser.newPage({ viewport: { width: 1280, height: 720 }, deviceScaleFactor: 1 });
  await tab.goto(pathToFileURL(path.resolve(page)).href);
  await tab.waitForFunction(() => document.documentElement.dataset.drawn === '1');
  await tab.click(`#colors button[data-color="${values.color}"]`);
  if (values.hover !== undefined) {
    const i = Number(values.hover);
    const [x, y] = await tab.evaluate(
      (k) =>
        (window as unknown as { featcacheMap: { pointClient(i: number): [number, number] } }).featcacheMap.pointClient(
          k,
        ),
      i,
    );
    await tab.mouse.move(x, y);
    await tab.waitForSelector('#tooltip:not([hidden])');
    await tab.waitForSelector('#tooltip .thumb[data-loaded="1"]', { timeout: 5000 }).catch(() => {});
  }
  const shot = await tab.screenshot();
  await fs.writeFile(png, await sharp(shot).png({ palette: true, quality: 90, effort: 10 }).toBuffer());
  console.log(png);
} finally {
  await browser.close();
}
