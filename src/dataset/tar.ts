/**
 * WebDataset tar shards as a dataset: `shards/train-{000000..000099}.tar` (brace ranges as webdataset writes them) or
 * a glob. Members are grouped into samples by key as webdataset does (`dir/key.jpg` + `dir/key.cls` → key `dir/key`);
 * a sample's label is its `.cls` (an integer class index) or the `label`/`class`/… field of its `.json`. Row paths
 * are `<shard relative to the pattern's folder>#<key>`. Opening lists each shard once as a stream (tar-stream: headers
 * and label members kept, image bodies skipped); images are then read at their listed offsets (plain tar) or in one
 * forward pass (gzip). Nothing is unpacked to disk and only the members being read are in memory. `--shard K/N`
 * splits by tar file, so each task reads whole shards.
 */
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import braces from 'braces';
import fg from 'fast-glob';
import * as tarStream from 'tar-stream';
import { FeatcacheError, errorMessage, optionName } from '../errors.js';
import { TAR_NAME } from './kinds.js';
import type { Item } from './source.js';
import type { ImageSource, Stamp } from './source.js';
import { type Shard, inShard } from './split.js';
import type { Skipped } from './walk.js';
import { isImageName } from './walk.js';

const oneLine = (error: unknown) => errorMessage(error).replace(/\s+/g, ' ').trim();

/** Brace ranges/lists or glob characters: `--data` names shards rather than one file or folder. */
const PATTERN_CHARS = /[*?[\]{}]/;
/** webdataset expands at most this many shard names; more is almost surely a typo. */
const MAX_SHARDS = 1_000_000;
/** A label member larger than this is not a label. */
const MAX_LABEL_BYTES = 1024 * 1024;
const LABEL_FIELDS = ['cls', 'label', 'class', 'category', 'target'];

export { isTarPattern } from './kinds.js';

/** The folder before the first pattern character: row paths are relative to it, so they do not move as shards are added. */
export function patternRoot(pattern: string): string {
  const segments = pattern.split('/');
  const fixed: string[] = [];
  for (const segment of segments.slice(0, -1)) {
    if (PATTERN_CHARS.test(segment)) break;
    fixed.push(segment);
  }
  return path.resolve(fixed.join('/') || (pattern.startsWith('/') ? '/' : '.'));
}

/** Tar files named by a brace pattern and/or glob, in the pattern's order (ranges) or sorted (globs). */
export async function expandShards(pattern: string): Promise<string[]> {
  let names: string[];
  try {
    names = /\{[^}]*(\.\.|,)[^}]*\}/.test(pattern)
      ? braces(pattern, { expand: true, rangeLimit: MAX_SHARDS })
      : [pattern];
  } catch (error) {
    throw new FeatcacheError(`${optionName('data')} ${pattern}: cannot expand the brace pattern (${oneLine(error)})`);
  }
  const files: string[] = [];
  const missing: string[] = [];
  for (const name of names) {
    if (/[*?[\]]/.test(name)) {
      const matches = (await fg(name, { onlyFiles: true, dot: false })).filter((f) => TAR_NAME.test(f)).sort();
      if (matches.length === 0) missing.push(name);
      files.push(...matches);
    } else if ((await fs.stat(name).catch(() => null))?.isFile()) files.push(name);
    else missing.push(name);
  }
  if (missing.length > 0) {
    throw new FeatcacheError(
      `${optionName('data')} ${pattern}: ${missing.length} of ${names.length} shard names match no tar file (e.g. ${missing.slice(0, 3).join(', ')}); expected every shard of the pattern to exist`,
    );
  }
  return [...new Set(files.map((f) => path.resolve(f)))];
}

/** webdataset's key/extension split: the key is the member path up to the first dot of its file name. */
export function splitMemberName(name: string): { key: string; ext: string } | null {
  const match = /^((?:.*\/|)[^./]+)\.([^/]*)$/.exec(name);
  return match ? { key: match[1]!, ext: match[2]!.toLowerCase() } : null;
}

export interface TarSample {
  key: string;
  /** Name of the member holding the image. */
  member: string;
  /** Byte offset of the member's data in the (uncompressed) tar: plain tars are read there directly. */
  offset: number;
  stamp: Stamp;
  label: string | number | null;
  /** Why the sample's `.cls` is unusable; the sample is then a failure of its own. */
  badLabel?: string;
}

export interface TarListing {
  file: string;
  samples: TarSample[];
  skipped: Skipped[];
  /** Why the shard could not be read to its end (corrupt or truncated); samples seen before are listed. */
  error?: string;
}

type TarEntry = Readable & { header: tarStream.Header };

/** A shard as a stream of tar entries, gunzipped when its name says so. */
function tarEntries(file: string): { entries: AsyncIterable<TarEntry>; stop: () => void } {
  const extract = tarStream.extract();
  const input = createReadStream(file, { highWaterMark: 1024 * 1024 });
  const stop = () => {
    input.destroy();
    extract.destroy();
  };
  input.on('error', (error) => extract.destroy(error));
  if (/\.(tgz|gz)$/i.test(file)) {
    const gunzip = createGunzip();
    gunzip.on('error', (error) => extract.destroy(error));
    input.pipe(gunzip).pipe(extract);
  } else {
    input.pipe(extract);
  }
  return { entries: extract as unknown as AsyncIterable<TarEntry>, stop };
}

async function readBody(entry: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of entry) {
    total += (chunk as Buffer).length;
    if (total > limit) throw new Error(`member larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

/** A `.cls` that is not a class index: that sample fails alone instead of turning every `.cls` into a class name. */
export class BadLabel {
  constructor(readonly reason: string) {}
}

function parseLabel(ext: string, body: Buffer): string | number | BadLabel | null {
  const text = body.toString('utf8').trim();
  if (ext === 'cls') {
    if (/^\d+$/.test(text) && Number.isSafeInteger(Number(text))) return Number(text);
    return new BadLabel(
      `bad .cls label ${JSON.stringify(text.slice(0, 40))}: expected a non-negative integer class index`,
    );
  }
  if (ext === 'cls2' || ext === 'label') return /^-?\d+$/.test(text) ? Number(text) : text || null;
  try {
    const json = JSON.parse(text) as unknown;
    if (typeof json === 'number' || typeof json === 'string') return json;
    if (json && typeof json === 'object') {
      for (const field of LABEL_FIELDS) {
        const value = (json as Record<string, unknown>)[field];
        if (typeof value === 'number' || typeof value === 'string') return value;
      }
    }
  } catch {
    // A .json that is not JSON carries no label; the sample stays usable as an image.
  }
  return null;
}

/** Prefer `key.jpg` over `key.seg.png`: the plain extension is the sample's image. */
function imageRank(ext: string): number {
  return ext.includes('.') ? 1 : 0;
}

/** What one key of a shard gathered while its members streamed past. */
interface ShardSample {
  member?: string;
  offset?: number;
  rank: number;
  stamp?: Stamp;
  label: string | number | BadLabel | null;
  labelExt?: string;
}

/** One pass over a shard's members: each key's best image and label, keys repeated, and the damage that stopped it. */
async function scanShard(
  file: string,
): Promise<{ byKey: Map<string, ShardSample>; duplicates: Set<string>; error?: string }> {
  const byKey = new Map<string, ShardSample>();
  const memberNames = new Set<string>();
  const duplicates = new Set<string>();
  const { entries, stop } = tarEntries(file);
  let error: string | undefined;
  try {
    for await (const entry of entries) {
      const header = entry.header;
      const parts = header.type === 'file' || header.type === 'contiguous-file' ? splitMemberName(header.name) : null;
      if (!parts || header.name.split('/').some((s) => s.startsWith('.') && s !== '.' && s !== '..')) {
        entry.resume();
        continue;
      }
      if (memberNames.has(header.name)) {
        // webdataset would yield a second sample under the same key; one row per key can hold only one, so say so.
        duplicates.add(parts.key);
        entry.resume();
        continue;
      }
      memberNames.add(header.name);
      const sample = byKey.get(parts.key) ?? { rank: Infinity, label: null };
      byKey.set(parts.key, sample);
      const lastExt = parts.ext.split('.').at(-1)!;
      if (isImageName(`x.${lastExt}`) && imageRank(parts.ext) < sample.rank) {
        sample.member = header.name;
        sample.offset = (header as { byteOffset?: number }).byteOffset ?? -1;
        sample.rank = imageRank(parts.ext);
        sample.stamp = { size: header.size, mtimeMs: header.mtime.getTime() };
        entry.resume();
      } else if (
        ['cls', 'cls2', 'label', 'json'].includes(parts.ext) &&
        (sample.labelExt !== 'cls' || parts.ext === 'cls') &&
        header.size <= MAX_LABEL_BYTES
      ) {
        sample.label = parseLabel(parts.ext, await readBody(entry, MAX_LABEL_BYTES));
        sample.labelExt = parts.ext;
      } else {
        entry.resume();
      }
    }
  } catch (caught) {
    error = oneLine(caught);
  } finally {
    stop();
  }
  return { byKey, duplicates, ...(error ? { error } : {}) };
}

/**
 * Reads one shard's headers and label members (image bodies are skipped, not kept), so the dataset knows its
 * samples and classes before extraction. A damaged shard lists the samples before the damage and says why.
 */
export async function listTar(file: string, relative: string): Promise<TarListing> {
  const { byKey, duplicates, error } = await scanShard(file);
  const samples: TarSample[] = [];
  const skipped: Skipped[] = [];
  for (const [key, s] of byKey) {
    if (!s.member) {
      skipped.push({ path: `${relative}#${key}`, reason: 'no image member in the sample' });
      continue;
    }
    const bad = s.label instanceof BadLabel ? s.label.reason : undefined;
    samples.push({
      key,
      member: s.member,
      offset: s.offset!,
      stamp: s.stamp!,
      label: s.label instanceof BadLabel ? null : s.label,
      ...(bad ? { badLabel: bad } : {}),
    });
  }
  for (const key of duplicates)
    skipped.push({
      path: `${relative}#${key}`,
      reason: 'duplicate key in the shard: its members appear again later; the first copy is used, the repeat is not',
    });
  if (error)
    skipped.push({ path: relative, reason: `corrupt or truncated tar after ${byKey.size} samples (${error})` });
  return { file, samples, skipped, ...(error ? { error } : {}) };
}

export interface TarDataset {
  root: string;
  /** Sorted class names; integer labels give '0'..max so the index is the label. */
  classes: string[];
  items: Item[];
  skipped: Skipped[];
  source: TarSource;
}

/** Integer labels are class indices (webdataset's .cls); other labels are names, indexed in sorted order. */
export function classesOf(labels: (string | number | null)[]): {
  classes: string[];
  index: (label: string | number | null) => number | null;
} {
  const present = labels.filter((l): l is string | number => l !== null);
  if (present.length === 0) return { classes: [], index: () => null };
  if (present.every((l) => typeof l === 'number' && Number.isInteger(l) && l >= 0)) {
    const max = Math.max(...(present as number[]));
    return {
      classes: Array.from({ length: max + 1 }, (_, i) => String(i)),
      index: (l) => (l === null ? null : Number(l)),
    };
  }
  const classes = [...new Set(present.map(String))].sort();
  const positions = new Map(classes.map((c, i) => [c, i]));
  return { classes, index: (l) => (l === null ? null : positions.get(String(l))!) };
}

/** Lists the shards of `pattern` (only this task's, with `shard`) into items labelled by their samples. */
export async function openTarDataset(
  pattern: string,
  shard?: Shard,
  log: (line: string) => void = () => {},
): Promise<TarDataset> {
  const root = patternRoot(pattern);
  const files = await expandShards(pattern);
  const relative = (file: string) => path.relative(root, file).split(path.sep).join('/');
  const mine = shard ? files.filter((f) => inShard(shard, `${relative(f)}#`)) : files;
  const listings: TarListing[] = [];
  for (const file of mine) {
    const listing = await listTar(file, relative(file));
    if (listing.error) log(`${file}: ${listing.error}; its ${listing.samples.length} readable samples are used`);
    listings.push(listing);
  }
  const { classes, index } = classesOf(
    listings.flatMap((l) => l.samples.filter((s) => !s.badLabel).map((s) => s.label)),
  );
  const items: Item[] = [];
  const samples = new Map<string, Located>();
  const damaged = new Map<string, { file: string; error: string }>();
  for (const listing of listings) {
    for (const sample of listing.samples) {
      const itemPath = `${relative(listing.file)}#${sample.key}`;
      if (sample.badLabel) {
        // Recorded in the failure ledger like an unreadable image, so the run exits 3 and names the sample.
        items.push({ path: itemPath, label: null });
        damaged.set(itemPath, { file: listing.file, error: sample.badLabel });
        continue;
      }
      items.push({ path: itemPath, label: index(sample.label) });
      samples.set(itemPath, { ...sample, file: listing.file });
    }
    if (listing.error) {
      // The samples past the damage have no names; the shard itself goes to the failure ledger as `shard.tar#`.
      const itemPath = `${relative(listing.file)}#`;
      items.push({ path: itemPath, label: null });
      damaged.set(itemPath, {
        file: listing.file,
        error: `corrupt or truncated tar after ${listing.samples.length} samples (${listing.error}); later samples were not read`,
      });
    }
  }
  return {
    root,
    classes,
    items,
    skipped: listings.flatMap((l) => l.skipped),
    source: new TarSource(root, samples, damaged),
  };
}

type Located = TarSample & { file: string };

/**
 * Reads samples of listed shards. A plain tar member is read at its listed offset (no scan, any order, one member in
 * memory per read); a gzipped shard is decompressed forward once, handing each requested member to its reader.
 */
export class TarSource implements ImageSource {
  private readonly handles = new Map<string, Promise<fs.FileHandle>>();
  private readonly cursors = new Map<string, GzipCursor>();

  constructor(
    private readonly root: string,
    private readonly samples: Map<string, Located>,
    private readonly damaged = new Map<string, { file: string; error: string }>(),
    readonly maxBytes = 256 * 1024 * 1024,
  ) {}

  locate(item: Item): string {
    return path.join(this.root, item.path);
  }

  async stamp(item: Item): Promise<Stamp | null> {
    const sample = this.samples.get(item.path);
    if (sample) return { ...sample.stamp };
    const broken = this.damaged.get(item.path);
    if (!broken) return null;
    const stat = await fs.stat(broken.file).catch(() => null);
    return stat ? { size: stat.size, mtimeMs: stat.mtimeMs } : null;
  }

  async read(item: Item): Promise<{ bytes: Buffer; stamp: Stamp }> {
    const broken = this.damaged.get(item.path);
    if (broken) throw new Error(broken.error);
    const sample = this.samples.get(item.path);
    if (!sample) throw new Error('not a sample of the listed shards');
    if (sample.stamp.size > this.maxBytes)
      throw new Error(`member ${sample.member} has ${sample.stamp.size} bytes; the cap is ${this.maxBytes}`);
    const bytes =
      sample.offset >= 0 && !/\.(tgz|gz)$/i.test(sample.file)
        ? await this.readAt(sample)
        : await this.cursor(sample.file).take(sample);
    if (bytes.length === 0) throw new Error('empty member (0 bytes)');
    return { bytes, stamp: { ...sample.stamp } };
  }

  async close(): Promise<void> {
    for (const cursor of this.cursors.values()) cursor.stop();
    this.cursors.clear();
    const handles = await Promise.allSettled(this.handles.values());
    this.handles.clear();
    for (const h of handles) if (h.status === 'fulfilled') await h.value.close().catch(() => {});
  }

  private async readAt(sample: Located): Promise<Buffer> {
    let handle = this.handles.get(sample.file);
    if (!handle) {
      handle = fs.open(sample.file, 'r');
      this.handles.set(sample.file, handle);
    }
    const bytes = Buffer.allocUnsafe(sample.stamp.size);
    const { bytesRead } = await (await handle).read(bytes, 0, bytes.length, sample.offset);
    if (bytesRead < bytes.length)
      throw new Error(`corrupt or truncated tar: ${sample.member} ends after ${bytesRead} of ${bytes.length} bytes`);
    return bytes;
  }

  private cursor(file: string): GzipCursor {
    let cursor = this.cursors.get(file);
    if (!cursor) {
      cursor = new GzipCursor(file, this.maxBytes);
      this.cursors.set(file, cursor);
    }
    return cursor;
  }
}

/**
 * One forward pass over a compressed shard: members asked for are handed to their waiting readers as the stream
 * passes them; the stream pauses while nobody waits. A member already passed restarts the pass.
 */
class GzipCursor {
  private readonly waiting = new Map<string, { resolve: (bytes: Buffer) => void; reject: (error: Error) => void }>();
  private wake: (() => void) | null = null;
  private running: Promise<void> | null = null;
  private passed = new Set<string>();
  private stopper: (() => void) | null = null;

  constructor(
    private readonly file: string,
    private readonly maxBytes: number,
  ) {}

  take(sample: Located): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.passed.has(sample.member)) this.restart();
      this.waiting.set(sample.member, { resolve, reject });
      this.wake?.();
      this.running ??= this.pump();
    });
  }

  stop(): void {
    this.stopper?.();
  }

  private restart(): void {
    this.stopper?.();
    this.running = null;
    this.passed = new Set();
  }

  private async pump(): Promise<void> {
    const { entries, stop } = tarEntries(this.file);
    this.stopper = stop;
    const passed = this.passed;
    let failure = 'member not found in the shard (it changed since it was listed)';
    try {
      for await (const entry of entries) {
        while (this.waiting.size === 0 && this.passed === passed)
          await new Promise<void>((resolve) => (this.wake = resolve));
        if (this.passed !== passed) return;
        const name = entry.header.name;
        passed.add(name);
        const waiter = this.waiting.get(name);
        if (!waiter) {
          entry.resume();
          continue;
        }
        // A body cut short throws here and the waiter is failed with the others below.
        const bytes = await readBody(entry, this.maxBytes);
        this.waiting.delete(name);
        waiter.resolve(bytes);
      }
    } catch (error) {
      failure = `corrupt or truncated tar (${oneLine(error)})`;
    } finally {
      stop();
    }
    if (this.passed !== passed) return;
    for (const waiter of this.waiting.values()) waiter.reject(new Error(failure));
    this.waiting.clear();
    this.running = null;
  }
}
