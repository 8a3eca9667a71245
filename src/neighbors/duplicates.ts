/**
 * Duplicate groups over cached splits: exact copies by the sha256 of the image bytes, near copies (re-encodes,
 * resizes, crops, small edits) by embedding similarity, merged into connected components within and across splits.
 * Nothing here touches the user's images beyond reading them (for the hashes of caches written before parts
 * recorded them).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { readPart } from '../store/part.js';
import type { FeatureCache } from '../store/reader.js';
import { sha256Bytes, writeBytesAtomic } from '../util/fsx.js';
import type { KnnResult } from './exact.js';
import { INDEX_DIR } from './hnsw.js';
import type { SplitRows } from './split.js';

/** What extract recorded about each live row beyond its features: the bytes' hash and where the image was. */
export interface RowSources {
  /** sha256 of the image bytes, or null where neither the part nor a re-read could give one. */
  hashes: (string | null)[];
  /** The image file each row was read from (data root + path), or null when the part does not record the root. */
  files: (string | null)[];
  /** Rows whose hash came from re-reading the image (a cache extracted before hashes were recorded). */
  reread: number;
  /** Rows whose image could not be read for a hash (moved or deleted since extract). */
  unreadable: number;
}

interface HashCacheEntry {
  size: number;
  mtimeMs: number;
  sha256: string;
}

/**
 * The content hash and image file of every row of `rows` (one split). Hashes come from the parts; rows from older
 * parts are hashed by reading their images once, and those hashes are kept in `<split>/neighbors/content-sha256.json`
 * keyed by the file's size and mtime, so the next run reads nothing.
 */
export async function rowSources(
  cache: FeatureCache,
  rows: SplitRows,
  log: (line: string) => void = () => {},
): Promise<RowSources> {
  const fromParts = new Map<string, { hash: string | null; root: string | null; size: number; mtimeMs: number }>();
  for (const file of await cache.partFiles(rows.split)) {
    const part = await readPart(file);
    const root = typeof part.meta.provenance.dataRoot === 'string' ? part.meta.provenance.dataRoot : null;
    for (const r of part.rows)
      fromParts.set(`${r.path}\0${path.basename(file)}`, {
        hash: r.contentSha256 ?? null,
        root,
        size: r.size,
        mtimeMs: r.mtimeMs,
      });
  }
  const cacheFile = path.join(cache.dir, rows.split, INDEX_DIR, 'content-sha256.json');
  const known = await readHashCache(cacheFile);
  const hashes: (string | null)[] = [];
  const files: (string | null)[] = [];
  const missing: number[] = [];
  rows.paths.forEach((p, i) => {
    const info = fromParts.get(`${p}\0${rows.parts[i]}`);
    const file = info?.root ? path.resolve(info.root, p) : null;
    files.push(file);
    const old = known[p];
    const hash =
      info?.hash ?? (old && info && old.size === info.size && old.mtimeMs === info.mtimeMs ? old.sha256 : null);
    hashes.push(hash);
    if (hash === null && file) missing.push(i);
  });
  let unreadable = 0;
  if (missing.length > 0) {
    log(
      `duplicates: ${missing.length} rows of ${rows.split} were extracted before parts recorded image hashes; reading their images once to hash them (kept in ${cacheFile})`,
    );
    for (const i of missing) {
      const bytes = await fs.readFile(files[i]!).catch(() => null);
      if (!bytes) {
        unreadable++;
        continue;
      }
      const info = fromParts.get(`${rows.paths[i]}\0${rows.parts[i]}`)!;
      hashes[i] = sha256Bytes(bytes);
      known[rows.paths[i]!] = { size: info.size, mtimeMs: info.mtimeMs, sha256: hashes[i] };
    }
    await fs.mkdir(path.dirname(cacheFile), { recursive: true });
    await writeBytesAtomic(cacheFile, JSON.stringify(known));
    if (unreadable > 0)
      log(`duplicates: ${unreadable} images of ${rows.split} could not be read; they are matched by similarity only`);
  }
  return { hashes, files, reread: missing.length - unreadable, unreadable };
}

async function readHashCache(file: string): Promise<Record<string, HashCacheEntry>> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, HashCacheEntry>;
  } catch {
    return {};
  }
}

export interface GroupMember {
  split: string;
  path: string;
  /** The image file, when the cache records where it was read from. */
  file: string | null;
  label: string | null;
  sha256: string | null;
  /** Similarity to the group's kept member (1 for a byte-identical copy). */
  similarity: number;
}

export interface DuplicateGroup {
  /** 'exact': all members byte-identical; 'near': at least one member only similar. */
  kind: 'exact' | 'near';
  /** Members in more than one split: a train↔val/test leak. */
  leak: boolean;
  splits: string[];
  /** Members with the kept one first (see `keepRank`). */
  members: GroupMember[];
  /** Lowest similarity of a member to the kept one. */
  minSimilarity: number;
}

/**
 * Which member of a group stays: evaluation splits before training ones (a benchmark's val/test set is usually fixed
 * by others, so the training copy is the one to drop), then the shortest path, then the first in path order.
 */
export function keepRank(a: GroupMember, b: GroupMember): number {
  const rank = (m: GroupMember) => (/^(train|training)$/i.test(m.split) ? 1 : 0);
  return rank(a) - rank(b) || a.path.length - b.path.length || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
}

class UnionFind {
  private readonly parent: Int32Array;
  constructor(n: number) {
    this.parent = Int32Array.from({ length: n }, (_, i) => i);
  }
  find(i: number): number {
    while (this.parent[i] !== i) {
      this.parent[i] = this.parent[this.parent[i]!]!;
      i = this.parent[i]!;
    }
    return i;
  }
  union(a: number, b: number): void {
    const [ra, rb] = [this.find(a), this.find(b)];
    if (ra !== rb) this.parent[Math.max(ra, rb)] = Math.min(ra, rb);
  }
}

export interface GroupInput {
  rows: SplitRows & { origin: string[] };
  hashes: (string | null)[];
  files: (string | null)[];
  /** Self-kNN of `rows` (cosine distances). */
  knn: KnnResult;
  k: number;
  /** Cosine similarity from which two rows are near copies. */
  threshold: number;
}

/** Rows joined by an equal hash or a kNN edge of similarity ≥ threshold, as components keyed by their root. */
function connectedRows(input: GroupInput): Map<number, number[]> {
  const { rows, hashes, knn, k, threshold } = input;
  const sets = new UnionFind(rows.count);
  const byHash = new Map<string, number>();
  hashes.forEach((h, i) => {
    if (h === null) return;
    const first = byHash.get(h);
    if (first === undefined) byHash.set(h, i);
    else sets.union(first, i);
  });
  for (let i = 0; i < rows.count; i++) {
    for (let j = 0; j < k; j++) {
      const other = knn.indices[i * k + j]!;
      if (other < 0) break;
      const similarity = 1 - knn.distances[i * k + j]!;
      if (similarity < threshold) break;
      sets.union(i, other);
    }
  }
  const members = new Map<number, number[]>();
  for (let i = 0; i < rows.count; i++) {
    const root = sets.find(i);
    const list = members.get(root);
    if (list) list.push(i);
    else members.set(root, [i]);
  }
  return members;
}

/** Cosine similarity of rows a and b of row-major `features`; 0 when either is the zero vector. */
function cosine(features: Float32Array, dim: number, a: number, b: number): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let d = 0; d < dim; d++) {
    const x = features[a * dim + d]!;
    const y = features[b * dim + d]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

/** Connected components of the exact-hash and similarity ≥ threshold edges, leaks first, then larger groups. */
export function duplicateGroups(input: GroupInput): DuplicateGroup[] {
  const { rows, hashes } = input;
  const members = connectedRows(input);
  const similarity = (a: number, b: number) =>
    hashes[a] !== null && hashes[a] === hashes[b] ? 1 : cosine(rows.features, rows.dim, a, b);
  const groups: DuplicateGroup[] = [];
  for (const list of members.values()) {
    if (list.length < 2) continue;
    const asMembers = list.map((i): GroupMember & { row: number } => ({
      row: i,
      split: rows.origin[i]!,
      path: rows.paths[i]!,
      file: input.files[i] ?? null,
      label: rows.labels[i]! >= 0 ? (rows.classes[rows.labels[i]!] ?? null) : null,
      sha256: hashes[i] ?? null,
      similarity: 1,
    }));
    asMembers.sort(keepRank);
    const kept = asMembers[0]!.row;
    for (const m of asMembers) m.similarity = m.row === kept ? 1 : similarity(kept, m.row);
    const allSame = asMembers.every((m) => m.sha256 !== null && m.sha256 === asMembers[0]!.sha256);
    const splits = [...new Set(asMembers.map((m) => m.split))].sort();
    groups.push({
      kind: allSame ? 'exact' : 'near',
      leak: splits.length > 1,
      splits,
      members: asMembers.map(({ row: _row, ...m }) => m),
      minSimilarity: Math.min(...asMembers.map((m) => m.similarity)),
    });
  }
  return groups.sort(
    (a, b) =>
      Number(b.leak) - Number(a.leak) ||
      b.members.length - a.members.length ||
      (a.members[0]!.path < b.members[0]!.path ? -1 : 1),
  );
}
