/**
 * Writes the map page: one HTML file that opens from disk, offline, with every point of the map on a canvas. The
 * page's template, script and style live in src/map/page/ as plain files and are inlined here at run time; the data
 * goes in as JSON (typed columns as base64) inside a <script type="application/json">, so no user string is ever
 * parsed as HTML or code.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FeatcacheError, invalidParameter, optionName } from '../errors.js';
import { GENERATOR_META, escapeHtml } from '../util/html.js';
import { requireOursOrAbsent, writeOutputFile } from '../util/output.js';
import { isStreamOut, type MapData, type MapPageOptions, type MapPageResult } from './data.js';
import { makeThumbnails, THUMBNAILS_MARKER, thumbnailsDirFor, type Thumbnails } from './thumbnails.js';

const ASSETS = ['map.html', 'map.js', 'map.css'] as const;

/**
 * Where the page's files are: beside this module when a build copies them, else in src/map/page of the package
 * (this module runs from dist/src/map/, and the package ships src/map/page/).
 */
export function pageAssetsDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.join(here, 'page'), path.resolve(here, '../../../src/map/page')];
  const found = candidates.find((dir) => ASSETS.every((f) => existsSync(path.join(dir, f))));
  if (!found)
    throw new Error(
      `featcache map: the page's files (${ASSETS.join(', ')}) are missing from ${candidates.join(' and ')}`,
    );
  return found;
}

interface PageAssets {
  template: string;
  script: string;
  style: string;
}

async function readAssets(): Promise<PageAssets> {
  const dir = pageAssetsDir();
  const [template, script, style] = await Promise.all(ASSETS.map((f) => fs.readFile(path.join(dir, f), 'utf8')));
  // Inlined verbatim: a closing tag inside would end the element early.
  if (/<\/script/i.test(script!) || /<\/style/i.test(style!)) throw new Error('map page assets contain a closing tag');
  return { template: template!, script: script!, style: style! };
}

function base64(array: Float32Array | Int32Array | Uint8Array): string {
  return Buffer.from(array.buffer, array.byteOffset, array.byteLength).toString('base64');
}

/**
 * JSON safe inside a <script> element: `<` escaped, so `</script>` or `<!--` in a path cannot end it; U+2028/2029
 * escaped too, as some tools still treat them as line ends.
 */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/** The page's data: typed columns as base64 of their little-endian bytes (a third of JSON's size, parsed at once). */
export function pagePayload(data: MapData, thumbs: Thumbnails | null): Record<string, unknown> {
  checkLengths(data);
  const flagNames: string[] = [];
  const flagIndex = new Map<string, number>();
  const flags = data.audit?.flags.map((list) =>
    list.map((f) => {
      let k = flagIndex.get(f);
      if (k === undefined) flagIndex.set(f, (k = flagNames.push(f) - 1));
      return k;
    }),
  );
  return {
    version: 1,
    title: data.title,
    provenance: data.provenance,
    classes: data.classes,
    splits: data.splits,
    count: data.count,
    x: base64(data.x),
    y: base64(data.y),
    split: base64(data.split),
    label: base64(data.label),
    paths: data.paths,
    color: data.color,
    predictions: data.predictions && {
      source: data.predictions.source,
      index: base64(data.predictions.index),
      probability: base64(data.predictions.probability),
    },
    audit: data.audit && {
      source: data.audit.source,
      score: base64(data.audit.score),
      flagNames,
      flags,
    },
    thumbs: thumbs && {
      dir: `${encodeURIComponent(thumbs.dirName)}/`,
      size: thumbs.size,
      cols: thumbs.columns,
      sprites: thumbs.sprites,
      point: base64(thumbs.point),
      sprite: thumbs.cells.map((c) => c.sprite),
      cell: thumbs.cells.map((c) => c.cell),
      w: thumbs.cells.map((c) => c.w),
      h: thumbs.cells.map((c) => c.h),
    },
  };
}

function checkLengths(data: MapData): void {
  const columns: [string, { length: number }][] = [
    ['x', data.x],
    ['y', data.y],
    ['paths', data.paths],
    ['split', data.split],
    ['label', data.label],
    ['files', data.files],
  ];
  if (data.predictions) columns.push(['predictions.index', data.predictions.index]);
  if (data.predictions) columns.push(['predictions.probability', data.predictions.probability]);
  if (data.audit) columns.push(['audit.score', data.audit.score], ['audit.flags', data.audit.flags]);
  for (const [name, column] of columns)
    if (column.length !== data.count)
      throw new Error(`map data: ${name} has ${column.length} entries for ${data.count} points`);
}

function cspHash(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

/** The page's HTML. Its script and style run only by hash: the page can fetch nothing and run nothing else. */
export function renderMapPage(assets: PageAssets, data: MapData, thumbs: Thumbnails | null): string {
  const csp = [
    "default-src 'none'",
    `script-src ${cspHash(assets.script)}`,
    `style-src ${cspHash(assets.style)}`,
    "img-src 'self' file: data: blob:",
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
  const values: Record<string, string> = {
    csp,
    title: escapeHtml(data.title),
    style: assets.style,
    script: assets.script,
    data: scriptJson(pagePayload(data, thumbs)),
  };
  for (const key of Object.keys(values))
    if (!assets.template.includes(`{{${key}}}`)) throw new Error(`map page template lacks {{${key}}}`);
  // One pass, so nothing inserted (a title holding "{{script}}", say) is substituted again.
  return assets.template.replace(/\{\{(\w+)\}\}/g, (whole, key: string) => values[key] ?? whole);
}

/** A page featcache wrote carries its generator tag; anything else at --out is the user's. */
function isOurPage(content: Buffer): boolean {
  return content.subarray(0, 4096).toString('utf8').includes(GENERATOR_META);
}

/** The deepest existing node on the way to `dir`, and whether it is a directory. */
async function nearestExisting(dir: string): Promise<{ path: string; isDirectory: boolean }> {
  let current = path.resolve(dir);
  for (;;) {
    const stat = await fs.stat(current).catch(() => null);
    if (stat) return { path: current, isDirectory: stat.isDirectory() };
    const parent = path.dirname(current);
    if (parent === current) return { path: current, isDirectory: false };
    current = parent;
  }
}

/**
 * Refuses an --out the page cannot go to, before the layout (the long part) runs and before anything is written: an
 * empty path, a directory, a file featcache did not write, a parent path that is a file, or a thumbnails folder
 * beside the page that holds the user's files. A parent folder that does not exist yet is fine: it is made.
 */
export async function checkMapOut(out: string, thumbnails: boolean): Promise<void> {
  const expected = 'a file path for the page (e.g. map.html), or - for stdout';
  if (out.trim() === '') throw invalidParameter('out', expected, out);
  if (isStreamOut(out)) return;
  const stat = await fs.stat(out).catch(() => null);
  if (stat?.isDirectory()) throw invalidParameter('out', expected, `${out}, a directory`);
  await requireOursOrAbsent(out, 'out', isOurPage);
  const parent = await nearestExisting(path.dirname(path.resolve(out)));
  if (!parent.isDirectory)
    throw new FeatcacheError(`${optionName('out')} ${out}: ${parent.path} is not a directory; nothing was written`);
  if (!thumbnails) return;
  const thumbs = thumbnailsDirFor(out);
  const found = await fs.stat(thumbs).catch(() => null);
  if (!found) return;
  const entries = found.isDirectory() ? await fs.readdir(thumbs) : null;
  if (entries === null || (entries.length > 0 && !entries.includes(THUMBNAILS_MARKER)))
    throw new FeatcacheError(
      `${optionName('out')}: the page's thumbnails go to ${thumbs}, ${entries ? `which holds files featcache did not write (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', …' : ''})` : 'a file featcache did not write'}; move it away, choose another ${optionName('out')}, or pass --no-thumbnails (nothing was written)`,
    );
}

export async function writeMapPage(out: string, data: MapData, options: MapPageOptions): Promise<MapPageResult> {
  checkLengths(data);
  await checkMapOut(out, options.thumbnails);
  const assets = await readAssets();
  const toStdout = isStreamOut(out);
  // A folder that does not exist yet is made, as `--out reports/map.html` means.
  if (!toStdout) await fs.mkdir(path.dirname(path.resolve(out)), { recursive: true });
  let thumbs: Thumbnails | null = null;
  if (options.thumbnails && !toStdout) {
    // The counts are the caller's to report (the map command's summary says them once).
    thumbs = await makeThumbnails(thumbnailsDirFor(out), data.files, options.thumbnailSize, options.log);
  }
  await writeOutputFile(out, renderMapPage(assets, data, thumbs));
  return {
    page: out,
    thumbnailsMade: thumbs?.made ?? 0,
    thumbnailsReused: thumbs?.reused ?? 0,
    thumbnailsMissing: thumbs?.missing ?? data.count,
    written: [out, ...(thumbs?.written ?? [])],
  };
}
