/**
 * A split's live rows with every column the cache holds, one part at a time: what export and compaction stream.
 * FeatureCache.batches yields only features, labels and paths; these also carry label names, file sizes and mtimes.
 */
import type { PartContent } from './part.js';
import type { FeatureCache, LatestRecord } from './reader.js';

export interface LivePart {
  /** The part file and its position in commit order. */
  file: string;
  index: number;
  content: PartContent;
  /** Indices (into content.rows) of the rows that are the newest record of their path, in part order. */
  keep: number[];
}

/** Streams the parts of a split with the rows each contributes; memory is bounded by one part. */
export async function* liveParts(
  cache: FeatureCache,
  split: string,
  latest: Map<string, LatestRecord>,
  parts?: string[],
): AsyncGenerator<LivePart> {
  const files = parts ?? (await cache.partFiles(split));
  await cache.requireNoMissingParts(split);
  for (const [index, file] of files.entries()) {
    const content: PartContent = await cache.readPart(file);
    // A path twice in one part counts once, with its last row (the order `latest` applies records in).
    const keep: number[] = [];
    const seen = new Set<string>();
    for (let i = content.rows.length - 1; i >= 0; i--) {
      const row = content.rows[i]!;
      const record = latest.get(row.path);
      if (record?.kind === 'row' && record.part === index && !seen.has(row.path)) {
        seen.add(row.path);
        keep.push(i);
      }
    }
    keep.reverse();
    yield { file, index, content, keep };
  }
}

/** The kept rows' features, copied into one contiguous array. */
export function keptFeatures(part: LivePart, dim: number): Float32Array {
  const features = new Float32Array(part.keep.length * dim);
  part.keep.forEach((i, k) => features.set(part.content.features.subarray(i * dim, (i + 1) * dim), k * dim));
  return features;
}
