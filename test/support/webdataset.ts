/** Writing WebDataset-style tar shards for tests: each sample is `key.<ext>` members, written in order. */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { createGzip } from 'node:zlib';
import * as tarStream from 'tar-stream';

export interface Sample {
  key: string;
  members: Record<string, Buffer | string>;
}

export const MEMBER_MTIME = new Date('2024-01-02T03:04:05Z');

export async function writeShard(file: string, samples: Sample[], options: { gzip?: boolean } = {}): Promise<void> {
  const pack = tarStream.pack();
  for (const sample of samples) {
    for (const [ext, content] of Object.entries(sample.members)) {
      pack.entry(
        { name: `${sample.key}.${ext}`, mtime: MEMBER_MTIME },
        typeof content === 'string' ? Buffer.from(content) : content,
      );
    }
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  const stream = options.gzip ? pack.pipe(createGzip()) : pack;
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, Buffer.concat(chunks));
}
