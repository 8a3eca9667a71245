/**
 * Where an item's bytes come from. The folder source stats and reads files under the dataset root; other sources
 * (URL lists, tar shards) implement the same interface, so planning and decoding do not care where images live.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Item } from './index.js';

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
  /** The item's bytes and the stamp they were read at. */
  read(item: Item): Promise<{ bytes: Buffer; stamp: Stamp }>;
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
