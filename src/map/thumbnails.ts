/**
 * The map page's thumbnails: small JPEG sprites in a folder beside the page, made once and reused. A manifest keys
 * every thumbnail by its image file, size, mtime and the thumbnail size, so a second run only resizes images that
 * changed; sprites that still hold a needed thumbnail are kept byte for byte (no JPEG re-encoding on each run).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import { prepareOutputDir, type OutputDir } from '../util/output.js';

/** Marker of a thumbnails folder featcache wrote (prepareOutputDir refuses any other non-empty folder). */
export const THUMBNAILS_MARKER = '.featcache-map-thumbnails.json';
export const THUMBNAILS_MANIFEST = 'manifest.json';
/** Thumbnails per sprite row; a sprite holds SPRITE_COLUMNS² of them (256: a 128 px sprite is 2048 px square). */
export const SPRITE_COLUMNS = 16;
const SPRITE_CELLS = SPRITE_COLUMNS * SPRITE_COLUMNS;
/** The largest thumbnail side: a sprite of 16 × 512 px is 8192 px wide, well inside JPEG's 65 535 and memory. */
export const MAX_THUMBNAIL_SIZE = 512;
const SPRITE_QUALITY = 80;
/** Images resized at once: sharp works on libuv's thread pool, so a few in flight keep its threads busy. */
const CONCURRENCY = 8;
const MANIFEST_VERSION = 1;

export interface ThumbnailCell {
  sprite: string;
  cell: number;
  w: number;
  h: number;
}

interface Manifest {
  version: number;
  thumbnailSize: number;
  columns: number;
  entries: Record<string, ThumbnailCell>;
}

export interface Thumbnails {
  /** The folder, relative to the page: what the page's URLs start with. */
  dirName: string;
  size: number;
  columns: number;
  sprites: string[];
  /** One entry per distinct thumbnail; `point[i]` indexes this, -1 where point i has none. */
  cells: { sprite: number; cell: number; w: number; h: number }[];
  point: Int32Array;
  made: number;
  reused: number;
  /** Points without a thumbnail. */
  missing: number;
  written: string[];
}

/** The thumbnails folder for a page: beside it, named after it (map.html → map.thumbs). */
export function thumbnailsDirFor(page: string): string {
  const parsed = path.parse(page);
  return path.join(parsed.dir, `${parsed.name}.thumbs`);
}

interface Source {
  file: string;
  key: string;
}

/** Stats each point's image once per distinct file; a missing or unreadable file gives no key. */
async function keyPoints(files: (string | null)[], size: number): Promise<(Source | null)[]> {
  const byFile = new Map<string, Promise<Source | null>>();
  return Promise.all(
    files.map((file) => {
      if (!file) return Promise.resolve(null);
      const abs = path.resolve(file);
      let source = byFile.get(abs);
      if (!source) {
        source = fs.stat(abs).then(
          (s) => (s.isFile() ? { file: abs, key: `${abs}\0${s.size}\0${Math.round(s.mtimeMs)}\0${size}` } : null),
          () => null,
        );
        byFile.set(abs, source);
      }
      return source;
    }),
  );
}

async function readManifest(dir: string, size: number): Promise<Manifest | null> {
  try {
    const parsed = JSON.parse(await fs.readFile(path.join(dir, THUMBNAILS_MANIFEST), 'utf8')) as Manifest;
    if (parsed.version !== MANIFEST_VERSION || parsed.thumbnailSize !== size || parsed.columns !== SPRITE_COLUMNS)
      return null;
    return typeof parsed.entries === 'object' && parsed.entries !== null ? parsed : null;
  } catch {
    return null;
  }
}

interface Resized {
  key: string;
  data: Buffer;
  w: number;
  h: number;
}

/** One image made small (EXIF orientation applied, transparency flattened); null when sharp cannot read it. */
async function resize(file: string, key: string, size: number): Promise<Resized | null> {
  try {
    const { data, info } = await sharp(file, { failOn: 'none' })
      .rotate()
      .resize(size, size, { fit: 'inside', withoutEnlargement: true })
      .flatten({ background: '#1a1d23' })
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { key, data, w: info.width, h: info.height };
  } catch {
    return null;
  }
}

async function mapLimited<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const k = next++;
      out[k] = await fn(items[k]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

async function writeSprite(target: string, thumbs: Resized[], size: number): Promise<void> {
  const rows = Math.ceil(thumbs.length / SPRITE_COLUMNS);
  const width = SPRITE_COLUMNS * size;
  await sharp({ create: { width, height: rows * size, channels: 3, background: '#1a1d23' } })
    .composite(
      thumbs.map((t, k) => ({
        input: t.data,
        raw: { width: t.w, height: t.h, channels: 3 as const },
        left: (k % SPRITE_COLUMNS) * size,
        top: Math.floor(k / SPRITE_COLUMNS) * size,
      })),
    )
    .jpeg({ quality: SPRITE_QUALITY, mozjpeg: true })
    .toFile(target);
}

/**
 * Makes (or reuses) the thumbnails of every point into `dir`. Refuses a folder featcache did not write (the user's
 * files are never replaced); on failure nothing in the folder is replaced.
 */
export async function makeThumbnails(
  dir: string,
  files: (string | null)[],
  size: number,
  log?: (line: string) => void,
): Promise<Thumbnails> {
  const sources = await keyPoints(files, size);
  const output = await prepareOutputDir(dir, THUMBNAILS_MARKER, 'out');
  try {
    const result = await fillThumbnails(output, path.basename(dir), sources, size, log);
    await output.commit();
    return result;
  } catch (error) {
    await output.abort();
    throw error;
  }
}

async function fillThumbnails(
  output: OutputDir,
  dirName: string,
  sources: (Source | null)[],
  size: number,
  log?: (line: string) => void,
): Promise<Thumbnails> {
  const previous = (await readManifest(output.dir, size))?.entries ?? {};
  const needed = new Map<string, Source>();
  for (const s of sources) if (s && !needed.has(s.key)) needed.set(s.key, s);

  const entries = new Map<string, ThumbnailCell>();
  const kept = new Set<string>();
  const toMake: Source[] = [];
  for (const [key, source] of needed) {
    const old = previous[key];
    if (old && (await exists(path.join(output.dir, old.sprite)))) {
      entries.set(key, old);
      kept.add(old.sprite);
    } else toMake.push(source);
  }
  const reused = entries.size;
  // Thumbnails of images not on this page (another --split to the same --out) are kept while their image is
  // unchanged, so going from train to train,val and back makes nothing twice. Their sprites are kept anyway when
  // they share one with a needed thumbnail.
  for (const key of await stillCurrent(Object.keys(previous).filter((key) => !needed.has(key)))) {
    const old = previous[key]!;
    if (kept.has(old.sprite) || (await exists(path.join(output.dir, old.sprite)))) {
      entries.set(key, old);
      kept.add(old.sprite);
    }
  }
  const written: string[] = [];
  for (const sprite of kept) {
    await fs.copyFile(path.join(output.dir, sprite), output.file(sprite));
    written.push(path.join(output.dir, sprite));
  }

  let made = 0;
  let spriteNumber = nextSpriteNumber([...kept]);
  for (let start = 0; start < toMake.length; start += SPRITE_CELLS) {
    const batch = toMake.slice(start, start + SPRITE_CELLS);
    const resized = (await mapLimited(batch, CONCURRENCY, (s) => resize(s.file, s.key, size))).filter(
      (r): r is Resized => r !== null,
    );
    if (resized.length === 0) continue;
    const sprite = `sprite-${spriteNumber++}.jpg`;
    await writeSprite(output.file(sprite), resized, size);
    written.push(path.join(output.dir, sprite));
    resized.forEach((r, cell) => entries.set(r.key, { sprite, cell, w: r.w, h: r.h }));
    made += resized.length;
    log?.(`thumbnails: ${made + reused} of ${needed.size}`);
  }

  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    thumbnailSize: size,
    columns: SPRITE_COLUMNS,
    entries: Object.fromEntries(entries),
  };
  await fs.writeFile(output.file(THUMBNAILS_MANIFEST), `${JSON.stringify(manifest)}\n`);
  written.push(path.join(output.dir, THUMBNAILS_MANIFEST));

  const sprites = [...new Set([...needed.keys()].flatMap((key) => entries.get(key)?.sprite ?? []))].sort(
    bySpriteNumber,
  );
  const spriteIndex = new Map(sprites.map((s, k) => [s, k]));
  const cellIndex = new Map<string, number>();
  const cells: Thumbnails['cells'] = [];
  const point = new Int32Array(sources.length).fill(-1);
  let missing = 0;
  sources.forEach((s, i) => {
    const entry = s ? entries.get(s.key) : undefined;
    if (!s || !entry) {
      missing++;
      return;
    }
    let k = cellIndex.get(s.key);
    if (k === undefined) {
      k = cells.length;
      cellIndex.set(s.key, k);
      cells.push({ sprite: spriteIndex.get(entry.sprite)!, cell: entry.cell, w: entry.w, h: entry.h });
    }
    point[i] = k;
  });
  return {
    dirName,
    size,
    columns: SPRITE_COLUMNS,
    sprites,
    cells,
    point,
    made,
    reused,
    missing,
    written,
  };
}

/** The manifest keys whose image file still has the size and mtime the key was made with. */
async function stillCurrent(keys: string[]): Promise<string[]> {
  const current = await mapLimited(keys, 32, async (key) => {
    const [file, size, mtime] = key.split('\0');
    const stat = await fs.stat(file!).catch(() => null);
    return stat?.isFile() && String(stat.size) === size && String(Math.round(stat.mtimeMs)) === mtime;
  });
  return keys.filter((_, k) => current[k]);
}

function spriteNumberOf(name: string): number {
  const m = /^sprite-(\d+)\.jpg$/.exec(name);
  return m ? Number(m[1]) : -1;
}

function bySpriteNumber(a: string, b: string): number {
  return spriteNumberOf(a) - spriteNumberOf(b);
}

function nextSpriteNumber(names: string[]): number {
  return names.reduce((max, name) => Math.max(max, spriteNumberOf(name) + 1), 0);
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    (s) => s.isFile(),
    () => false,
  );
}
