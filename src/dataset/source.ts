/**
 * Where an item's bytes come from. The folder source stats and reads files under the dataset root; other sources
 * (URL lists, tar shards) implement the same interface, so planning and decoding do not care where images live.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

/** One image of a dataset. */
export interface Item {
  /** Relative to the dataset root, '/' separated: the key the cache stores. */
  path: string;
  label: number | null;
}

/** What the incremental plan compares: an item whose stamp is unchanged is not extracted again. */
export interface Stamp {
  size: number;
  mtimeMs: number;
}

export interface ImageSource {
  /** Where the item lives, for messages (a file path, a URL, `shard.tar#key`). */
  locate(item: Item): string;
  /** The item's current stamp; null when it cannot be seen now (it will be read, and fail, with a reason). */
  stamp(item: Item): Promise<Stamp | null>;
  /**
   * The item's bytes and the stamp they were read at. A failure throws; an error with a numeric `status` (an HTTP
   * status) keeps it in the failure ledger.
   */
  read(item: Item): Promise<{ bytes: Buffer; stamp: Stamp }>;
  /** The items about to be read, in order: a remote source starts fetching ahead (bounded). Optional. */
  prefetch?(items: readonly Item[]): void;
  /** Releases connections and file handles; the source is not used afterwards. Optional. */
  close?(): Promise<void>;
}

/** Images as files under `root`; item paths are relative to it. */
export function folderSource(root: string): ImageSource {
  const locate = (item: Item) => path.join(root, item.path);
  return {
    locate,
    async stamp(item) {
      const stat = await fs.stat(locate(item)).catch(() => null);
      return stat ? { size: stat.size, mtimeMs: stat.mtimeMs } : null;
    },
    async read(item) {
      const file = locate(item);
      const stat = await fs.stat(file);
      const bytes = await fs.readFile(file);
      return { bytes, stamp: { size: stat.size, mtimeMs: stat.mtimeMs } };
    },
  };
}
