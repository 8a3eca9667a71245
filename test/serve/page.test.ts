import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ServeHandle, serve } from '../../src/jobs/serve.js';
import { tempDir, writeImage, writeTinyModel } from '../support/helpers.js';
import { writeTestHead } from './heads.js';
import { CHROMIUM, CHROMIUM_ARGS } from '../support/chromium.js';

describe(
  'serve: the page in a real browser',
  { skip: existsSync(CHROMIUM) ? false : `needs Chromium at ${CHROMIUM} (Debian: apt-get install chromium)` },
  () => {
    let dir: string;
    let server: ServeHandle;
    let image: string;
    before(async () => {
      dir = await tempDir();
      const model = await writeTinyModel(path.join(dir, 'tiny.onnx'));
      const head = path.join(dir, 'head');
      await writeTestHead(head, {
        model,
        tappedTensor: 'pooled',
        dim: 3,
        classes: ['apple', 'banana', 'cherry'],
        normalization: 'none',
        scale: 3,
      });
      image = path.join(dir, 'fruit.jpg');
      await writeImage(image, 11, { width: 80, height: 60 });
      server = await serve({ head, port: 0, top: 3 });
      await server.ready;
    });
    after(async () => {
      await server?.close();
      await fs.rm(dir, { recursive: true, force: true });
    });

    it('uploads an image through the file picker and shows the predicted class, bars and a thumbnail', async () => {
      const api = await (
        await fetch(new URL('predict', server.url), {
          method: 'POST',
          body: await fs.readFile(image),
          headers: { 'content-type': 'image/jpeg' },
        })
      ).json();
      const { chromium } = await import('playwright-core');
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
      try {
        const page = await browser.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(String(e)));
        await page.goto(server.url);
        assert.match((await page.textContent('body')) ?? '', /3 classes: apple, banana, cherry/);
        await page.setInputFiles('#file', image);
        const card = page.locator('.card[data-status="done"]');
        await card.waitFor({ timeout: 20_000 });
        assert.equal(await card.getAttribute('data-top'), api.top[0].label);
        const labels = await card.locator('.row .label').allTextContents();
        assert.deepEqual(
          labels,
          api.top.map((t: { label: string }) => t.label),
        );
        const shown = await card.locator('.row .p').allTextContents();
        assert.deepEqual(
          shown,
          api.top.map((t: { probability: number }) => t.probability.toFixed(3)),
        );
        const thumbWidth = await card.locator('img').evaluate((img) => (img as HTMLImageElement).naturalWidth);
        assert.equal(thumbWidth, 80, 'the thumbnail shows the uploaded image');
        // Dropping a file on the drop zone classifies it too.
        const bytes = [...(await fs.readFile(image))];
        await page.evaluate(async (data) => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([new Uint8Array(data)], 'dropped.jpg', { type: 'image/jpeg' }));
          document
            .getElementById('drop')!
            .dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }, bytes);
        const dropped = page.locator('.card[data-file="dropped.jpg"][data-status="done"]');
        await dropped.waitFor({ timeout: 20_000 });
        assert.equal(await dropped.getAttribute('data-top'), api.top[0].label);
        assert.deepEqual(errors, []);
      } finally {
        await browser.close();
      }
    });
  },
);
