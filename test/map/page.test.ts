import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MapData } from '../../src/map/data.js';
import { writeMapPage } from '../../src/map/page.js';
import { THUMBNAILS_MANIFEST, THUMBNAILS_MARKER, thumbnailsDirFor } from '../../src/map/thumbnails.js';
import { tempDir, writeImage } from '../support/helpers.js';

const HOSTILE = '</script><script>window.pwned=1</script><!--\u2028{{script}}';

/** `images` points with generated images, then one with files null and one whose file does not exist. */
async function tinyMap(dir: string, images: number): Promise<MapData> {
  const count = images + 2;
  const files: (string | null)[] = [];
  for (let k = 0; k < images; k++) {
    const file = path.join(dir, 'images', `img${k}.jpg`);
    if (!existsSync(file)) await writeImage(file, k + 1, { width: 40 + k, height: 30 });
    files.push(file);
  }
  files.push(null, path.join(dir, 'images', 'gone.jpg'));
  return {
    title: `map ${HOSTILE}`,
    provenance: { note: HOSTILE },
    classes: ['a', HOSTILE],
    splits: ['train'],
    count,
    x: Float32Array.from({ length: count }, (_, k) => k),
    y: Float32Array.from({ length: count }, (_, k) => -k),
    paths: Array.from({ length: count }, (_, k) => (k === 0 ? HOSTILE : `p${k}.jpg`)),
    split: new Uint8Array(count),
    label: Int32Array.from({ length: count }, (_, k) => k % 2),
    files,
    predictions: null,
    audit: {
      source: 'audit',
      score: Float32Array.from({ length: count }, () => 0.5),
      flags: Array.from({ length: count }, () => [HOSTILE]),
    },
    color: 'label',
  };
}

function inlineElements(html: string, open: string): string[] {
  const out: string[] = [];
  let at = 0;
  for (;;) {
    const start = html.indexOf(open, at);
    if (start < 0) return out;
    const end = html.indexOf('</', start);
    out.push(html.slice(start + open.length, end));
    at = end;
  }
}

const listSprites = async (dir: string) => (await fs.readdir(dir)).filter((f) => f.endsWith('.jpg')).sort();

describe('writeMapPage', () => {
  let dir: string;
  before(async () => {
    dir = await tempDir('featcache-map-unit-');
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('keeps every user string inert: data as escaped JSON, title as text, script and style allowed only by hash', async () => {
    const out = path.join(dir, 'escape', 'map.html');
    await fs.mkdir(path.dirname(out), { recursive: true });
    const data = await tinyMap(path.dirname(out), 1);
    await writeMapPage(out, data, { thumbnails: false, thumbnailSize: 32 });
    const html = await fs.readFile(out, 'utf8');
    // Two scripts (data, code), each closed once: no user string closed one early.
    assert.equal(html.match(/<\/script/gi)?.length, 2);
    assert.ok(!html.includes('window.pwned=1</script>'));
    const [json] = inlineElements(html, '<script type="application/json" id="map-data">');
    assert.ok(!json!.includes('\u2028') && !json!.includes('<'), 'the JSON holds neither < nor a raw U+2028');
    const payload = JSON.parse(json!);
    assert.equal(payload.paths[0], HOSTILE);
    assert.equal(payload.classes[1], HOSTILE);
    assert.equal(payload.title, data.title);
    assert.deepEqual(payload.audit.flagNames, [HOSTILE]);
    assert.deepEqual(
      new Float32Array(Uint8Array.from(Buffer.from(payload.x, 'base64')).buffer),
      data.x,
      'x survives as base64 bytes',
    );
    assert.match(html, /<title>map &lt;\/script&gt;&lt;script&gt;window\.pwned=1&lt;\/script&gt;&lt;!--/);
    // The CSP allows exactly the inlined script and style; a page edited by a formatter would fail its own hashes.
    const csp = /http-equiv="Content-Security-Policy" content="([^"]+)"/.exec(html)![1]!;
    assert.match(csp, /default-src 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
    const script = inlineElements(html, '<script>')[0]!;
    const style = inlineElements(html, '<style>')[0]!;
    const hash = (t: string) => `'sha256-${createHash('sha256').update(t).digest('base64')}'`;
    assert.ok(csp.includes(`script-src ${hash(script)}`), csp);
    assert.ok(csp.includes(`style-src ${hash(style)}`), csp);
    assert.ok(script.includes('featcacheMap'), 'the page script is inlined');
    // Filled in one pass: the template's placeholders are gone, and a "{{script}}" inside a user string stays text.
    assert.doesNotMatch(html, /\{\{(csp|title|style|data)\}\}/);
    assert.match(html, /<h1 id="title">map &lt;.*\{\{script\}\}<\/h1>/s);
  });

  it("refuses to overwrite a user's file at --out, or a user's folder where the thumbnails go", async () => {
    const sub = path.join(dir, 'user');
    await fs.mkdir(sub);
    const data = await tinyMap(sub, 2);
    const out = path.join(sub, 'map.html');
    await fs.writeFile(out, 'my notes');
    await assert.rejects(
      writeMapPage(out, data, { thumbnails: true, thumbnailSize: 32 }),
      /out: .*map\.html exists and featcache cannot prove it wrote it/,
    );
    assert.equal(await fs.readFile(out, 'utf8'), 'my notes');
    assert.equal(existsSync(thumbnailsDirFor(out)), false, 'nothing written beside a refused page');

    const out2 = path.join(sub, 'other.html');
    await fs.mkdir(thumbnailsDirFor(out2));
    await fs.writeFile(path.join(thumbnailsDirFor(out2), 'holiday.jpg'), 'mine');
    await assert.rejects(
      writeMapPage(out2, data, { thumbnails: true, thumbnailSize: 32 }),
      /out: .*other\.thumbs.*holiday\.jpg/,
    );
    assert.equal(await fs.readFile(path.join(thumbnailsDirFor(out2), 'holiday.jpg'), 'utf8'), 'mine');
    assert.equal(existsSync(out2), false);
  });

  it('makes thumbnails once, reuses them by file, size and mtime, and replaces only its own sprites', async () => {
    const sub = path.join(dir, 'reuse');
    await fs.mkdir(sub);
    const out = path.join(sub, 'map.html');
    const thumbs = thumbnailsDirFor(out);
    const images = 300; // more than one 256-cell sprite
    const data = await tinyMap(sub, images);
    const options = { thumbnails: true, thumbnailSize: 24 };

    const first = await writeMapPage(out, data, options);
    assert.deepEqual([first.thumbnailsMade, first.thumbnailsReused, first.thumbnailsMissing], [images, 0, 2]);
    assert.deepEqual(await listSprites(thumbs), ['sprite-0.jpg', 'sprite-1.jpg']);
    const before = await fs.readFile(path.join(thumbs, 'sprite-0.jpg'));

    const second = await writeMapPage(out, data, options);
    assert.deepEqual([second.thumbnailsMade, second.thumbnailsReused, second.thumbnailsMissing], [0, images, 2]);
    assert.ok(before.equals(await fs.readFile(path.join(thumbs, 'sprite-0.jpg'))), 'a reused sprite is kept as it was');

    // One image changes: only it is made again, into a new sprite beside the kept ones.
    await writeImage(data.files[5]!, 999, { width: 50, height: 50 });
    const later = new Date(Date.now() + 5000);
    await fs.utimes(data.files[5]!, later, later);
    const third = await writeMapPage(out, data, options);
    assert.deepEqual([third.thumbnailsMade, third.thumbnailsReused], [1, images - 1]);
    assert.deepEqual(await listSprites(thumbs), ['sprite-0.jpg', 'sprite-1.jpg', 'sprite-2.jpg']);

    // A page of fewer points (one --split of two) keeps the others' thumbnails: the full page again makes none.
    const firstTen = { ...data, count: 10, predictions: null, audit: null };
    for (const key of ['x', 'y', 'paths', 'split', 'label', 'files'] as const)
      (firstTen as Record<string, unknown>)[key] = data[key].slice(0, 10);
    const part = await writeMapPage(out, firstTen, options);
    assert.deepEqual([part.thumbnailsMade, part.thumbnailsReused], [0, 10]);
    const whole = await writeMapPage(out, data, options);
    assert.deepEqual([whole.thumbnailsMade, whole.thumbnailsReused], [0, images]);

    // A bigger thumbnail size invalidates them all; sprites no longer used are removed, the marker lists the rest.
    const fourth = await writeMapPage(out, { ...data }, { thumbnails: true, thumbnailSize: 32 });
    assert.deepEqual([fourth.thumbnailsMade, fourth.thumbnailsReused], [images, 0]);
    assert.deepEqual(await listSprites(thumbs), ['sprite-0.jpg', 'sprite-1.jpg']);
    const marker = JSON.parse(await fs.readFile(path.join(thumbs, THUMBNAILS_MARKER), 'utf8'));
    assert.deepEqual([...marker.files].sort(), [THUMBNAILS_MANIFEST, 'sprite-0.jpg', 'sprite-1.jpg']);
    const manifest = JSON.parse(await fs.readFile(path.join(thumbs, THUMBNAILS_MANIFEST), 'utf8'));
    assert.equal(Object.keys(manifest.entries).length, images);
    assert.ok(fourth.written.includes(out));

    // Its own page is replaced without complaint; no thumbnails asked, none counted.
    const none = await writeMapPage(out, data, { thumbnails: false, thumbnailSize: 32 });
    assert.deepEqual([none.thumbnailsMade, none.thumbnailsReused, none.thumbnailsMissing], [0, 0, data.count]);
  });

  it('refuses data whose columns do not match its count', async () => {
    const data = await tinyMap(path.join(dir, 'escape'), 1);
    await assert.rejects(
      writeMapPage(
        path.join(dir, 'bad.html'),
        { ...data, x: new Float32Array(1) },
        { thumbnails: false, thumbnailSize: 32 },
      ),
      /x has 1 entries for 3 points/,
    );
  });
});
