import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, optionName } from '../errors.js';

/** Extensions sharp decodes. Anything else in a data folder is skipped and reported, never fed to the decoder. */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set([
  '.jpg',
  '.jpeg',
  '.jpe',
  '.png',
  '.gif',
  '.webp',
  '.tif',
  '.tiff',
  '.avif',
  '.heic',
  '.heif',
  '.jp2',
  '.jxl',
]);

export function isImageName(name: string): boolean {
  return IMAGE_EXTENSIONS.has(path.extname(name).toLowerCase());
}

export interface Skipped {
  path: string;
  reason: string;
}

export interface WalkResult {
  /** Image files, relative to the walked root, with '/' separators, sorted. */
  images: string[];
  skipped: Skipped[];
}

export interface WalkOptions {
  /** Follow symlinks whose target lies outside `root`; by default such a link is refused with an error. */
  followOutside: boolean;
}

/** Whether `file` (after resolving symlinks) lies inside `root` (after resolving symlinks). */
export async function isInside(root: string, file: string): Promise<boolean> {
  const [realRoot, realFile] = await Promise.all([fs.realpath(root), fs.realpath(file).catch(() => file)]);
  return realFile === realRoot || realFile.startsWith(realRoot + path.sep);
}

/**
 * Lists image files under `root`, following symlinks but visiting each real directory once, so symlink loops and
 * directories linked twice cannot produce duplicates or hang. A symlink that leads outside `root` is refused unless
 * `followOutside`: a dataset should not silently grow a class from elsewhere on the disk. Hidden entries (dot
 * files) are ignored.
 */
export async function walkImages(root: string, options: WalkOptions = { followOutside: false }): Promise<WalkResult> {
  const images: string[] = [];
  const skipped: Skipped[] = [];
  const visited = new Set<string>();
  const toPosix = (p: string) => p.split(path.sep).join('/');
  async function visit(dir: string): Promise<void> {
    let real: string;
    try {
      real = await fs.realpath(dir);
    } catch (error) {
      skipped.push({
        path: toPosix(path.relative(root, dir)),
        reason: (error as NodeJS.ErrnoException).code ?? 'unreadable',
      });
      return;
    }
    if (visited.has(real)) return;
    visited.add(real);
    let entries: import('node:fs').Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch (error) {
      skipped.push({
        path: toPosix(path.relative(root, dir)) || '.',
        reason: `cannot list directory (${(error as NodeJS.ErrnoException).code})`,
      });
      return;
    }
    for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      if (entry.name.startsWith('.')) continue;
      const full = path.join(dir, entry.name);
      const relative = toPosix(path.relative(root, full));
      let isDir = entry.isDirectory();
      let isFile = entry.isFile();
      if (entry.isSymbolicLink()) {
        try {
          const stat = await fs.stat(full);
          isDir = stat.isDirectory();
          isFile = stat.isFile();
        } catch (error) {
          skipped.push({
            path: relative,
            reason: `broken or looping symlink (${(error as NodeJS.ErrnoException).code})`,
          });
          continue;
        }
        if (!options.followOutside && !(await isInside(root, full))) {
          throw new FeatcacheError(
            `${full}: a symlink that leads outside the data folder ${root} (to ${await fs.realpath(full)}); remove it, or pass ${optionName('followSymlinks')} to read it`,
          );
        }
      }
      if (isDir) await visit(full);
      else if (isFile && isImageName(entry.name)) images.push(relative);
      else if (isFile) skipped.push({ path: relative, reason: 'not an image file extension' });
    }
  }
  await visit(root);
  return { images: images.sort(), skipped };
}

export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory();
  } catch {
    return false;
  }
}
