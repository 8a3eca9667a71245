/**
 * The duplicates job: exact and near-duplicate groups over cached splits, train↔val/test leaks first, as lists
 * (JSON/CSV), an HTML report with each group side by side, and optionally a list of the copies one could drop.
 * Nothing of the user's is deleted or relabelled: the extras list is for the user to act on.
 */
import { DEFAULT_DUPLICATES_OPTIONS } from './defaults.js';
import * as path from 'node:path';
import sharp from 'sharp';
import { invalidParameter } from '../errors.js';
import { exactKnn } from '../neighbors/exact.js';
import { type DuplicateGroup, duplicateGroups, rowSources } from '../neighbors/duplicates.js';
import { DEFAULT_HNSW_OPTIONS, hnswSelfKnn } from '../neighbors/hnsw.js';
import { concatSplits, loadSplit } from '../neighbors/split.js';
import { FeatureCache } from '../store/reader.js';
import { escapeHtml, page } from '../util/html.js';
import { withDefaults } from '../util/options.js';
import { csvText } from '../util/csv.js';
import { writeOutputFile } from '../util/output.js';

export { DEFAULT_DUPLICATES_OPTIONS };

export interface DuplicatesOptions {
  cache: string;
  /** Splits to search, within and across; all of the cache's when empty. */
  splits: string[];
  /**
   * Cosine similarity from which two images are near copies. 0.90 by default: on monkeys' MobileNetV2-int8 features,
   * planted copies of val in train (JPEG q50–95, 50–150 % resizes, 90 % crops, ±10 % brightness) were found with
   * recall 0.95–0.98 at precision 0.96–0.97 (0.92: recall 0.93–0.97 at precision 0.99–1); scripts/measure-duplicates.ts.
   */
  threshold: number;
  /** Neighbours looked at per image: a group can grow past it through chains. */
  k: number;
  /** Rows from which near copies are searched with HNSW instead of exactly. */
  annThreshold: number;
  /** Writes the droppable copies (all but the kept member of each group), one image per line. */
  out?: string | undefined;
  /** Writes an HTML page with each group's thumbnails side by side. */
  report?: string | undefined;
  /** Writes the groups as CSV (group, kind, leak, split, path, label, similarity, keep). */
  csv?: string | undefined;
  /** Groups shown in the report at most. */
  reportLimit: number;
  log?: (line: string) => void;
}

export interface DuplicatesResult {
  cache: string;
  splits: string[];
  rows: number;
  threshold: number;
  groups: DuplicateGroup[];
  /** Copies beyond one per group: what `out` lists. */
  extras: number;
  leaks: number;
  /** Rows hashed by re-reading their images (caches extracted before parts recorded hashes). */
  reread: number;
  method: 'exact' | 'hnsw';
}

/**
 * Finds duplicate groups over a cache's splits.
 *
 * @example
 * const { groups } = await duplicates({ cache: 'features', splits: ['train', 'val'] });
 * for (const g of groups.filter((g) => g.leak)) console.log(g.members.map((m) => `${m.split}/${m.path}`));
 */
export async function duplicates(options: Partial<DuplicatesOptions> = {}): Promise<DuplicatesResult> {
  const o = withDefaults(DEFAULT_DUPLICATES_OPTIONS, options);
  if (!(o.threshold > 0 && o.threshold <= 1))
    throw invalidParameter('threshold', 'a cosine similarity in (0, 1]', o.threshold);
  if (!Number.isInteger(o.k) || o.k < 1) throw invalidParameter('k', 'a positive integer', o.k);
  const log = o.log ?? (() => {});
  const cache = await FeatureCache.open(o.cache);
  const asked = o.splits.length > 0 ? o.splits : await cache.splits();
  const splits = await Promise.all(asked.map((s) => cache.resolveSplit(s)));
  const loaded = [];
  const hashes: (string | null)[] = [];
  const files: (string | null)[] = [];
  let reread = 0;
  for (const split of splits) {
    const rows = await loadSplit(cache, split);
    const sources = await rowSources(cache, rows, log);
    loaded.push(rows);
    hashes.push(...sources.hashes);
    files.push(...sources.files);
    reread += sources.reread;
  }
  const rows = concatSplits(loaded);
  const method = rows.count >= o.annThreshold ? 'hnsw' : 'exact';
  const knn =
    method === 'hnsw'
      ? hnswSelfKnn(rows.features, rows.count, rows.dim, o.k, 'cosine', DEFAULT_HNSW_OPTIONS)
      : await exactKnn(rows.features, rows.count, rows.features, rows.count, rows.dim, {
          k: o.k,
          metric: 'cosine',
          excludeSelf: true,
        });
  const groups = duplicateGroups({ rows, hashes, files, knn, k: o.k, threshold: o.threshold });
  const result: DuplicatesResult = {
    cache: o.cache,
    splits,
    rows: rows.count,
    threshold: o.threshold,
    groups,
    extras: groups.reduce((n, g) => n + g.members.length - 1, 0),
    leaks: groups.filter((g) => g.leak).length,
    reread,
    method,
  };
  if (o.out) await writeOutputFile(o.out, extrasList(groups), 'out');
  if (o.csv) await writeOutputFile(o.csv, groupsCsv(groups), 'csv');
  if (o.report) await writeOutputFile(o.report, await reportPage(result, o.reportLimit), 'report');
  return result;
}

/** Every member but the kept one (the first), as the image file when known, else split/path. */
export function extrasList(groups: DuplicateGroup[]): string {
  const lines = groups.flatMap((g) => g.members.slice(1).map((m) => m.file ?? `${m.split}/${m.path}`));
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

const csvField = csvText;

export function groupsCsv(groups: DuplicateGroup[]): string {
  const lines = ['group,kind,leak,split,path,label,similarity,keep'];
  groups.forEach((g, i) =>
    g.members.forEach((m, j) =>
      lines.push(
        [
          String(i + 1),
          g.kind,
          String(g.leak),
          m.split,
          m.path,
          m.label ?? '',
          m.similarity.toFixed(4),
          String(j === 0),
        ]
          .map((v, column) => (column === 6 ? v : csvField(v)))
          .join(','),
      ),
    ),
  );
  return `${lines.join('\n')}\n`;
}

async function thumbnail(file: string | null, size = 160): Promise<string> {
  if (!file) return '<div class="missing">no image file recorded</div>';
  const thumb = await sharp(file, { pages: 1 })
    .resize(size, size, { fit: 'cover' })
    .jpeg({ quality: 75 })
    .toBuffer()
    .catch(() => null);
  return thumb
    ? `<img alt="${escapeHtml(path.basename(file))}" src="data:image/jpeg;base64,${thumb.toString('base64')}">`
    : `<div class="missing">${escapeHtml(file)}: unreadable</div>`;
}

async function reportPage(result: DuplicatesResult, limit: number): Promise<string> {
  const sections: string[] = [];
  for (const [i, g] of result.groups.slice(0, limit).entries()) {
    const figures: string[] = [];
    for (const [j, m] of g.members.entries())
      figures.push(
        `<figure class="${j === 0 ? 'keep' : ''}">${await thumbnail(m.file)}<figcaption>${j === 0 ? '<b>keep</b> ' : ''}${escapeHtml(m.split)}/${escapeHtml(m.path)}<br><span class="muted">${escapeHtml(m.label ?? 'unlabelled')} · ${j === 0 ? '' : `similarity ${m.similarity.toFixed(3)}`}${m.similarity === 1 && j > 0 && m.sha256 === g.members[0]!.sha256 ? ' (identical bytes)' : ''}</span></figcaption></figure>`,
      );
    sections.push(
      `<section><h2>${i + 1}. ${g.leak ? '<span class="wrong">leak</span> ' : ''}${g.kind} duplicates, ${g.members.length} images in ${g.splits.map(escapeHtml).join(' + ')}</h2><div class="grid">${figures.join('')}</div></section>`,
    );
  }
  const summary = `<p>${result.groups.length} groups over ${result.rows} images in ${result.splits.map(escapeHtml).join(', ')} (${result.leaks} across splits, listed first); ${result.extras} copies beyond one per group. Near copies: cosine similarity ≥ ${result.threshold} (${result.method} search); exact copies: identical sha256 of the image bytes. The kept image of each group (first, outlined) is the one in an evaluation split, else the shortest path. Nothing was deleted or relabelled.${result.groups.length > limit ? ` Showing the first ${limit} groups.` : ''}</p>`;
  const style =
    '<style>h2{font-size:15px;margin:18px 0 6px} figure{width:160px} figure img{width:160px;height:160px} figure.keep img{outline:3px solid #2a7}.missing{width:160px;height:160px;background:#eee;font-size:12px}</style>';
  return page(`featcache duplicates (${result.groups.length} groups)`, `${style}${summary}${sections.join('\n')}`);
}
