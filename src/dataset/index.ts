/**
 * Datasets: where images are and what they are labelled. Layouts, detected from what --data names:
 * ImageFolder with split folders, ImageFolder without (split by --val-fraction), a CSV of id,label with an image
 * directory (Kaggle dog breeds), a plain list of unlabelled images (a folder of images or a .txt list), a .txt list or
 * CSV of http(s) URLs, and WebDataset tar shards (a brace pattern or glob). Each comes with the source of its bytes.
 */
import { SPLIT_NAMES, splitAlias } from '../util/split-names.js';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, invalidParameter, missingFile, numberIn, optionName } from '../errors.js';
import { type ImageSource, type Item, folderSource } from './source.js';
import { type Shard, inShard, stratifiedSplit } from './split.js';
import { isTarPattern, isUrl } from './kinds.js';
import type { UrlSourceOptions, UrlSource } from './url.js';
import { readListLines } from './list.js';
import { csvTextValue } from '../util/csv.js';
import { type Skipped, IMAGE_EXTENSIONS, isDirectory, isInside, walkImages } from './walk.js';

export type { Item } from './source.js';

export type DatasetLayout =
  'imagefolder-splits' | 'imagefolder' | 'csv' | 'list' | 'url-list' | 'url-csv' | 'webdataset';

export interface Dataset {
  root: string;
  layout: DatasetLayout;
  /** Where the items' bytes are read from. */
  source: ImageSource;
  /** Sorted class names (torchvision ImageFolder order); empty for unlabelled data. */
  classes: string[];
  split: string;
  items: Item[];
  skipped: Skipped[];
}

export interface DatasetOptions {
  /**
   * Dataset root (ImageFolder), a folder of images, a `.txt` list of image paths or of http(s) URLs, a CSV of URLs, or
   * WebDataset tar shards (`shards/train-{000000..000099}.tar` or a glob). Required.
   */
  data: string;
  /** Split folder to read (any folder under `data`), or train/val with `valFraction`. */
  split: string;
  /** CSV of id,label (Kaggle layout), as given or inside `data`. */
  labels?: string | undefined;
  /** Image directory for `labels`; default: <data>/<split> if it exists, else <data>/train, else <data>. */
  images?: string | undefined;
  /** Stratified, seeded validation fraction when the data has no split folders. */
  valFraction?: number | undefined;
  /** Seed of that split. */
  seed: number;
  /** Only the items of shard K of N. */
  shard?: Shard | undefined;
  /** Follow symlinks whose target lies outside the data root (by default they are refused). */
  followSymlinks?: boolean | undefined;
  /** Fetch settings for URL datasets (timeouts, retries, concurrency, size cap). */
  fetch?: Partial<UrlSourceOptions> | undefined;
  /** Notes while listing (e.g. a damaged tar shard). */
  log?: ((line: string) => void) | undefined;
}

/** Folder names that mark split folders, as datasets name them; any folder given as the split counts too. */
export const SPLIT_DIRS = SPLIT_NAMES;

export async function openDataset(options: DatasetOptions): Promise<Dataset> {
  if (options.valFraction !== undefined) numberIn('valFraction', options.valFraction, 0, 1, true);
  if (isTarPattern(options.data) && !options.labels) return webDataset(options);
  const stat = await fs.stat(options.data).catch(() => null);
  if (!stat)
    throw missingFile(
      'data',
      options.data,
      'expected a dataset folder, an image folder, a .txt list of images or URLs, a CSV of URLs, or tar shards',
      'no such file or directory',
    );
  const dataset: Listed = options.labels
    ? await csvDataset(options)
    : stat.isFile() && /\.csv$/i.test(options.data)
      ? await csvDataset({ ...options, labels: options.data })
      : stat.isFile()
        ? await listFileDataset(options)
        : await folderDataset(options);
  refuseMultilineClasses(dataset.classes, options);
  const items = options.shard ? dataset.items.filter((i) => inShard(options.shard!, i.path)) : dataset.items;
  return { ...dataset, items, source: dataset.source ?? folderSource(dataset.root) };
}

/**
 * classes.txt and libsvm/CSV exports hold one class name per line: a name with a line break would shift every class
 * after it, so labels would silently name the wrong class.
 */
function refuseMultilineClasses(classes: string[], options: DatasetOptions): void {
  const bad = classes.find((c) => /[\r\n]/.test(c));
  if (bad === undefined) return;
  const source = options.labels ? `${optionName('labels')} ${options.labels}` : `${optionName('data')} ${options.data}`;
  throw new FeatcacheError(
    `${source}: class name ${JSON.stringify(bad)} contains a line break; class names are written one per line (classes.txt), so rename that class`,
  );
}

/** WebDataset shards: only this task's tar files are listed (`shard` splits by tar file). */
async function webDataset(options: DatasetOptions): Promise<Dataset> {
  const { openTarDataset } = await import('./tar.js');
  const tars = await openTarDataset(options.data, options.shard, options.log);
  refuseMultilineClasses(tars.classes, options);
  const split = applySplit(tars.items, tars.classes, options);
  return {
    root: tars.root,
    layout: 'webdataset',
    classes: tars.classes,
    split: options.split,
    items: split.items,
    skipped: tars.skipped,
    source: tars.source,
  };
}

/** Split folders under `root`: the usual names, plus the requested split when it is a folder there. */
async function splitFolders(root: string, split: string): Promise<string[]> {
  const names = new Set<string>(SPLIT_DIRS);
  if (split && !split.includes('/') && !split.startsWith('.')) names.add(split);
  const found: string[] = [];
  for (const name of names) if (await isDirectory(path.join(root, name))) found.push(name);
  return found.sort();
}

type Listed = Omit<Dataset, 'source'> & { source?: ImageSource };

async function folderDataset(options: DatasetOptions): Promise<Listed> {
  const root = path.resolve(options.data);
  const walk = { followOutside: options.followSymlinks ?? false };
  const splitDirs = await splitFolders(root, options.split);
  if (splitDirs.length > 0) {
    const split = splitAlias(options.split, splitDirs);
    if (!splitDirs.includes(split)) {
      throw invalidParameter(
        'split',
        `one of the split folders of ${options.data} (${splitDirs.join(', ')})`,
        options.split,
      );
    }
    if (split !== options.split) options.log?.(`--split ${options.split}: reading the split folder ${split}`);
    // Classes are the union over all split folders, so a class missing from val keeps its index.
    const classes = [
      ...new Set((await Promise.all(splitDirs.map((s) => subdirectories(path.join(root, s))))).flat()),
    ].sort();
    const walked = await walkImages(path.join(root, split), walk);
    return {
      root,
      layout: 'imagefolder-splits',
      classes,
      split,
      ...labelByFolder(
        walked.images.map((p) => `${split}/${p}`),
        walked.skipped,
        classes,
        1,
      ),
    };
  }
  const classes = await subdirectories(root);
  const walked = await walkImages(root, walk);
  if (classes.length === 0) {
    return {
      root,
      layout: 'list',
      classes: [],
      split: options.split,
      items: walked.images.map((p) => ({ path: p, label: null })),
      skipped: walked.skipped,
    };
  }
  const labelled = labelByFolder(walked.images, walked.skipped, classes, 0);
  return {
    root,
    layout: 'imagefolder',
    classes,
    split: options.split,
    ...applySplit(labelled.items, classes, options, 'folder'),
    skipped: labelled.skipped,
  };
}

async function subdirectories(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  const dirs: string[] = [];
  for (const entry of entries) {
    if (entry.name.startsWith('.')) continue;
    if (entry.isDirectory() || (entry.isSymbolicLink() && (await isDirectory(path.join(dir, entry.name)))))
      dirs.push(entry.name);
  }
  return dirs.sort();
}

/** Labels each image by the folder under the split (depth 0 = top level). Images outside any class folder are skipped. */
function labelByFolder(images: string[], skipped: Skipped[], classes: string[], depth: number) {
  const index = new Map(classes.map((c, i) => [c, i]));
  const items: Item[] = [];
  const extra: Skipped[] = [];
  for (const image of images) {
    const parts = image.split('/');
    const label = parts.length > depth + 1 ? index.get(parts[depth]!) : undefined;
    if (label === undefined) extra.push({ path: image, reason: 'not inside a class folder' });
    else items.push({ path: image, label });
  }
  return { items, skipped: [...skipped, ...extra] };
}

/**
 * Without `valFraction`, a flat input (a list, a CSV, URLs, tar shards: `val-*.tar` is WebDataset's val split) is
 * cached whole under the split it is given; an image folder without split folders only as train/all, since a split
 * name there most likely meant a folder that is not there.
 */
function applySplit(
  items: Item[],
  classes: string[],
  options: DatasetOptions,
  input: 'flat' | 'folder' = 'flat',
): { items: Item[] } {
  if (options.valFraction === undefined) {
    if (input === 'flat' || options.split === 'train' || options.split === 'all') return { items };
    throw new FeatcacheError(
      `${optionName('split')} ${options.split}: ${options.data} has no folder of that name and no split folders; pass ${optionName('valFraction')} (e.g. 0.1) to carve a stratified val split from it, or use ${optionName('split')} train`,
    );
  }
  const { train, val } = stratifiedSplit(
    items,
    (i) => classes[i.label ?? 0] ?? '',
    (i) => i.path,
    options.valFraction,
    options.seed,
  );
  if (options.split === 'train') return { items: train };
  if (options.split === 'val') return { items: val };
  if (options.split === 'all') return { items };
  throw invalidParameter('split', `"train" or "val" with ${optionName('valFraction')}`, options.split);
}

const ID_COLUMNS = ['id', 'image', 'image_id', 'file', 'filename', 'path'];
/** img2dataset's default URL column comes first for URL CSVs. */
const URL_COLUMNS = ['url', 'image_url', ...ID_COLUMNS];
const LABEL_COLUMNS = ['label', 'breed', 'class', 'category', 'target'];

/** `--labels` as given, else relative to `--data` (Kaggle's labels.csv sits beside the image folder). */
async function locateLabels(labels: string, data: string): Promise<string> {
  if ((await fs.stat(labels).catch(() => null))?.isFile()) return labels;
  const beside = path.join(data, labels);
  return (await fs.stat(beside).catch(() => null))?.isFile() ? beside : labels;
}

/** The rows of a labels CSV, keyed by its header. */
async function readLabelsCsv(csvFile: string): Promise<Record<string, string>[]> {
  const text = await fs.readFile(csvFile, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new FeatcacheError(`${optionName('labels')} ${csvFile}: cannot read (${error.code})`);
  });
  try {
    const { parse } = await import('csv-parse/sync');
    return parse(text, { columns: true, skip_empty_lines: true, trim: true, bom: true });
  } catch (error) {
    throw new FeatcacheError(`${optionName('labels')} ${csvFile}: not valid CSV (${(error as Error).message})`);
  }
}

/** The CSV's ids as items of the image folder; ids naming no file come back as `unknown`. */
async function csvItems(
  entries: { id: string; label: string }[],
  folder: {
    root: string;
    imageDir: string;
    relativeDir: string;
    files: Set<string>;
    index: Map<string, number>;
    csvFile: string;
  },
  options: DatasetOptions,
): Promise<{ items: Item[]; unknown: string[] }> {
  const { root, imageDir, relativeDir, files, index, csvFile } = folder;
  const items: Item[] = [];
  const unknown: string[] = [];
  for (const entry of entries) {
    const resolved = path.resolve(imageDir, entry.id);
    if (resolved !== imageDir && !resolved.startsWith(imageDir + path.sep)) {
      throw new FeatcacheError(
        `${optionName('labels')} ${csvFile}: id ${JSON.stringify(entry.id)} points outside the image directory ${imageDir}; ids must be file names inside it`,
      );
    }
    // An id that is a path from the data root to an image inside the image directory (the cached path, as
    // `featcache audit --labels-out` writes it) names that image, however deep, so a reviewed file feeds back as is.
    const cachedPath = await cachedPathId(root, imageDir, entry.id);
    if (cachedPath !== null) {
      if (!options.followSymlinks && !(await isInside(imageDir, path.join(root, cachedPath))))
        throw new FeatcacheError(
          `${optionName('labels')} ${csvFile}: ${cachedPath} is a symlink that leads outside the image directory ${imageDir}; pass ${optionName('followSymlinks')} to read it`,
        );
      items.push({ path: cachedPath, label: index.get(entry.label)! });
      continue;
    }
    const file = findImageFile(files, entry.id);
    if (!file) unknown.push(entry.id);
    else if (!options.followSymlinks && !(await isInside(imageDir, path.join(imageDir, file)))) {
      throw new FeatcacheError(
        `${optionName('labels')} ${csvFile}: ${file} is a symlink that leads outside the image directory ${imageDir}; pass ${optionName('followSymlinks')} to read it`,
      );
    } else items.push({ path: relativeDir ? `${relativeDir}/${file}` : file, label: index.get(entry.label)! });
  }
  return { items, unknown };
}

async function csvDataset(options: DatasetOptions): Promise<Listed> {
  const csvFile = await locateLabels(options.labels!, options.data);
  const rows = await readLabelsCsv(csvFile);
  const header = rows.length > 0 ? Object.keys(rows[0]!) : [];
  const urlColumn = URL_COLUMNS.map((c) => header.find((h) => h.toLowerCase() === c)).find(
    (h) => h !== undefined && rows.every((r) => isUrl(r[h] ?? '')),
  );
  if (urlColumn) return urlCsvDataset(options, csvFile, rows, urlColumn, header);
  if (options.labels === options.data && !options.images) {
    throw new FeatcacheError(
      `${optionName('data')} ${csvFile}: a CSV as ${optionName('data')} must hold http(s) URLs in a url/id column; for a CSV of file names and labels pass ${optionName('data')} <image folder> ${optionName('labels')} ${csvFile}`,
    );
  }
  const idColumn = header.find((h) => ID_COLUMNS.includes(h.toLowerCase()));
  const labelColumn = header.find((h) => LABEL_COLUMNS.includes(h.toLowerCase()));
  if (!idColumn || !labelColumn) {
    throw new FeatcacheError(
      `${optionName('labels')} ${csvFile}: expected a header with an id column (${ID_COLUMNS.join('/')}) and a label column (${LABEL_COLUMNS.join('/')}), got: ${header.join(',') || '(empty file)'}`,
    );
  }
  const root = path.resolve(options.data);
  const imageDir = path.resolve(options.images ?? (await defaultImageDir(root, options.split)));
  const relativeDir = path.relative(root, imageDir).split(path.sep).join('/');
  const seen = new Set<string>();
  const duplicates: string[] = [];
  const entries: { id: string; label: string }[] = [];
  for (const row of rows) {
    const id = csvTextValue(row[idColumn] ?? '');
    if (seen.has(id)) duplicates.push(id);
    seen.add(id);
    entries.push({ id, label: csvTextValue(row[labelColumn] ?? '') });
  }
  if (duplicates.length > 0) {
    throw new FeatcacheError(
      `${optionName('labels')} ${csvFile}: duplicate ids (${duplicates.length}): ${duplicates.slice(0, 5).join(', ')}; each id must appear once`,
    );
  }
  const classes = [...new Set(entries.map((e) => e.label))].sort();
  const index = new Map(classes.map((c, i) => [c, i]));
  const files = new Set(
    await fs.readdir(imageDir).catch(() => {
      throw missingFile(
        'images',
        imageDir,
        `pass the folder holding the images named by ${optionName('labels')} ${csvFile}`,
        'no such directory',
      );
    }),
  );
  const { items, unknown } = await csvItems(entries, { root, imageDir, relativeDir, files, index, csvFile }, options);
  if (unknown.length > 0) {
    throw new FeatcacheError(
      `${optionName('labels')} ${csvFile}: ${unknown.length} ids have no image in ${imageDir} (e.g. ${unknown.slice(0, 3).join(', ')}); expected <id> or <id>.jpg/.png`,
    );
  }
  const split = applySplit(items, classes, options);
  return { root, layout: 'csv', classes, split: options.split, items: split.items, skipped: [] };
}

/** A CSV whose url (or id) column holds URLs (img2dataset's input); the label column is optional. */
async function urlCsvDataset(
  options: DatasetOptions,
  csvFile: string,
  rows: Record<string, string>[],
  urlColumn: string,
  header: string[],
): Promise<Listed> {
  const labelColumn = header.find((h) => LABEL_COLUMNS.includes(h.toLowerCase()));
  const seen = new Set<string>();
  const duplicates: string[] = [];
  for (const row of rows) {
    const url = row[urlColumn]!.trim();
    if (seen.has(url)) duplicates.push(url);
    seen.add(url);
  }
  if (duplicates.length > 0) {
    throw new FeatcacheError(
      `${optionName('labels')} ${csvFile}: duplicate URLs (${duplicates.length}): ${duplicates.slice(0, 3).join(', ')}; each URL must appear once`,
    );
  }
  const classes = labelColumn ? [...new Set(rows.map((r) => r[labelColumn] ?? ''))].sort() : [];
  const index = new Map(classes.map((c, i) => [c, i]));
  const items = rows.map((r) => ({
    path: r[urlColumn]!.trim(),
    label: labelColumn ? index.get(r[labelColumn] ?? '')! : null,
  }));
  const root = path.dirname(path.resolve(csvFile));
  const split = labelColumn ? applySplit(items, classes, options).items : items;
  return {
    root,
    layout: 'url-csv',
    classes,
    split: options.split,
    items: split,
    skipped: [],
    source: await urlSource(options.fetch),
  };
}

async function defaultImageDir(root: string, split: string): Promise<string> {
  for (const candidate of [path.join(root, split), path.join(root, 'train')])
    if (await isDirectory(candidate)) return candidate;
  return root;
}

/** `id` as a /-separated path from the data root to an image file inside the image directory, or null. */
async function cachedPathId(root: string, imageDir: string, id: string): Promise<string | null> {
  if (!id.includes('/') || !IMAGE_EXTENSIONS.has(path.extname(id).toLowerCase())) return null;
  const resolved = path.resolve(root, ...id.split('/'));
  if (!resolved.startsWith(imageDir + path.sep)) return null;
  if (
    !(await fs.stat(resolved).then(
      (s) => s.isFile(),
      () => false,
    ))
  )
    return null;
  return path.relative(root, resolved).split(path.sep).join('/');
}

function findImageFile(files: Set<string>, id: string): string | null {
  if (files.has(id) && IMAGE_EXTENSIONS.has(path.extname(id).toLowerCase())) return id;
  for (const ext of ['.jpg', '.jpeg', '.png', '.webp', '.JPG', '.JPEG', '.PNG'])
    if (files.has(id + ext)) return id + ext;
  return null;
}

/** A text file with one image path per line (relative to the file's folder, or absolute). */
async function listFileDataset(options: DatasetOptions): Promise<Listed> {
  const root = path.dirname(path.resolve(options.data));
  const lines = await readListLines(options.data);
  const urls = lines.filter(isUrl);
  if (urls.length > 0) {
    if (urls.length < lines.length) {
      throw new FeatcacheError(
        `${optionName('data')} ${options.data}: mixes ${urls.length} URLs with ${lines.length - urls.length} file paths (e.g. ${lines.find((l) => !isUrl(l))}); expected one kind per list`,
      );
    }
    const items = [...new Set(urls)].map((url) => ({ path: url, label: null }));
    return {
      root,
      layout: 'url-list',
      classes: [],
      split: options.split,
      items,
      skipped: [],
      source: await urlSource(options.fetch),
    };
  }
  const items = lines.map((line) => ({
    path: path.relative(root, path.resolve(root, line)).split(path.sep).join('/'),
    label: null,
  }));
  return { root, layout: 'list', classes: [], split: options.split, items, skipped: [] };
}

/** The URL source, imported with undici only when a dataset names URLs. */
async function urlSource(options: Partial<UrlSourceOptions> | undefined): Promise<UrlSource> {
  const { UrlSource } = await import('./url.js');
  return new UrlSource(options);
}
