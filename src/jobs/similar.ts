/**
 * The similar job: the cached images nearest to each query. A query is a cached row (named by its path in the split)
 * or an image file, folder or URL, embedded with the cache's own model, tap and preset so its features are
 * comparable with the cached ones (refused with the reason when the model is missing or differs).
 */
import { DEFAULT_SIMILAR_OPTIONS } from './defaults.js';
import * as path from 'node:path';
import sharp from 'sharp';
import { type Backbone, openBackbone } from '../backbone/index.js';
import { parseDevice } from '../backbone/session.js';
import { UrlSource, isUrl } from '../dataset/url.js';
import { invalidParameter, missingFile } from '../errors.js';
import { decodeBatch } from '../image/batch.js';
import { DEFAULT_IMAGE_POLICY, type ImagePolicy, type Preset } from '../image/presets.js';
import { SplitSearcher } from '../neighbors/search.js';
import { FeatureCache } from '../store/reader.js';
import { exists } from '../util/fsx.js';
import { escapeHtml, page } from '../util/html.js';
import { withDefaults } from '../util/options.js';
import { writeOutputFile } from '../util/output.js';
import { csvText } from '../util/csv.js';
import { expandInputs } from './predict.js';

export { DEFAULT_SIMILAR_OPTIONS };

export interface SimilarOptions {
  cache: string;
  queries: string[];
  /** Split searched. */
  split: string;
  k: number;
  /** The backbone file, when it moved since extract (checked against the cache's sha256). */
  model?: string | undefined;
  device: string;
  threads: number;
  batchSize: number;
  report?: string | undefined;
  csv?: string | undefined;
  log?: (line: string) => void;
}

export interface Neighbour {
  path: string;
  label: string | null;
  /** Cosine similarity (1 − cosine distance). */
  similarity: number;
}

export interface SimilarAnswer {
  query: string;
  /** 'cached' when the query is a row of the split, else the file or URL embedded. */
  source: 'cached' | 'image';
  neighbours: Neighbour[];
  error?: string;
}

export interface SimilarResult {
  split: string;
  k: number;
  method: 'exact' | 'hnsw';
  answers: SimilarAnswer[];
  failed: number;
}

/**
 * @example
 * const { answers } = await similar({ cache: 'features', split: 'train', queries: ['photo.jpg'], k: 5 });
 */
export async function similar(options: Partial<SimilarOptions> & { queries: string[] }): Promise<SimilarResult> {
  const o = withDefaults(DEFAULT_SIMILAR_OPTIONS, options);
  if (!Number.isInteger(o.k) || o.k < 1) throw invalidParameter('k', 'a positive integer', o.k);
  if (o.queries.length === 0) throw invalidParameter('queries', 'an image, folder, URL or cached path', 'none');
  const cache = await FeatureCache.open(o.cache);
  const searcher = await SplitSearcher.open(o.cache, o.split, { log: o.log });
  try {
    const rows = new Map(searcher.rows.paths.map((p, i) => [p, i]));
    // `./validation/a.jpg` names the same cached row as `validation/a.jpg`.
    const rowOf = (q: string) => (isUrl(q) ? undefined : rows.get(path.posix.normalize(q)));
    const dim = searcher.rows.dim;
    const cached = o.queries.filter((q) => rowOf(q) !== undefined);
    const { files, unresolved } = await expandInputs(o.queries.filter((q) => rowOf(q) === undefined));
    const embedded =
      files.length > 0
        ? await embed(cache, files, o)
        : { features: new Float32Array(), ok: [], errors: new Map<string, string>() };
    const queries = [...cached, ...embedded.ok];
    const features = new Float32Array(queries.length * dim);
    cached.forEach((q, i) =>
      features.set(searcher.rows.features.subarray(rowOf(q)! * dim, (rowOf(q)! + 1) * dim), i * dim),
    );
    features.set(embedded.features, cached.length * dim);
    const found = await searcher.search(features, queries.length, o.k);
    const answers: SimilarAnswer[] = queries.map((query, i) => ({
      query,
      source: i < cached.length ? 'cached' : 'image',
      neighbours: Array.from(found.indices.subarray(i * o.k, (i + 1) * o.k))
        .map((row, j) => ({ row, d: found.distances[i * o.k + j]! }))
        .filter(({ row }) => row >= 0)
        .map(({ row, d }) => ({
          path: searcher.rows.paths[row]!,
          label: searcher.rows.labels[row]! >= 0 ? (searcher.rows.classes[searcher.rows.labels[row]!] ?? null) : null,
          similarity: 1 - d,
        })),
    }));
    for (const u of unresolved) answers.push({ query: u.input, source: 'image', neighbours: [], error: u.error });
    for (const [file, error] of embedded.errors) answers.push({ query: file, source: 'image', neighbours: [], error });
    const result: SimilarResult = {
      split: o.split,
      k: o.k,
      method: searcher.method,
      answers,
      failed: answers.filter((a) => a.error).length,
    };
    if (o.csv) await writeOutputFile(o.csv, similarCsv(result), 'csv');
    if (o.report)
      await writeOutputFile(o.report, await similarPage(result, await dataRootOf(cache, o.split)), 'report');
    return result;
  } finally {
    await searcher.close();
  }
}

/** Queries embedded with the cache's backbone, tap, preset and image policy. */
async function embed(
  cache: FeatureCache,
  files: string[],
  o: SimilarOptions,
): Promise<{ features: Float32Array; ok: string[]; errors: Map<string, string> }> {
  const m = cache.manifest;
  const modelFile = o.model ?? m.modelFile;
  if (!(await exists(modelFile)))
    throw missingFile(
      'model',
      modelFile,
      `the cache ${cache.dir} was extracted with that file (sha256 ${m.modelSha256.slice(0, 12)}…) — pass its current path to embed image queries, or query by a cached path`,
    );
  const backbone: Backbone = await openBackbone(modelFile, {
    tap: m.tappedTensor,
    device: parseDevice(o.device),
    threads: o.threads,
    fp16: m.precision === 'fp16',
    int8:
      m.precision === 'int8'
        ? {
            calibrationHash: m.calibrationHash,
            requireFused: false,
            options: { int8Dir: m.int8Model ? path.dirname(m.int8Model) : undefined },
          }
        : undefined,
    expect: { sha256: m.modelSha256, what: `the backbone the cache ${cache.dir} was extracted with` },
  });
  const source = files.some(isUrl) ? new UrlSource({}) : null;
  try {
    const policy: ImagePolicy = {
      ...DEFAULT_IMAGE_POLICY,
      exif: m.exif as ImagePolicy['exif'],
      icc: m.icc as ImagePolicy['icc'],
    };
    const spec = { preset: m.preset as unknown as Preset, policy, layout: backbone.input.layout };
    const chunks: Float32Array[] = [];
    const ok: string[] = [];
    const errors = new Map<string, string>();
    for (let start = 0; start < files.length; start += o.batchSize) {
      const batch = await decodeBatch(
        files.slice(start, start + o.batchSize),
        async (file) => ({
          bytes: isUrl(file) && source ? (await source.read({ path: file, label: null })).bytes : file,
          stamp: null,
        }),
        spec,
      );
      if (batch.ok.length > 0) chunks.push(await backbone.extract(batch.pixels, batch.ok.length, spec.preset.crop));
      ok.push(...batch.ok.map((d) => d.item));
      for (const f of batch.failed) errors.set(f.item, `${f.stage} failed: ${f.message}`);
    }
    const features = new Float32Array(ok.length * backbone.dim);
    chunks.reduce((offset, c) => (features.set(c, offset), offset + c.length), 0);
    return { features, ok, errors };
  } finally {
    await source?.close();
    await backbone.close();
  }
}

async function dataRootOf(cache: FeatureCache, split: string): Promise<string | null> {
  const parts = await cache.partFiles(split);
  const last = parts.at(-1);
  if (!last) return null;
  const { readPart } = await import('../store/part.js');
  const root = (await readPart(last)).meta.provenance.dataRoot;
  return typeof root === 'string' ? root : null;
}

const csvField = csvText;

export function similarCsv(result: SimilarResult): string {
  const lines = ['query,rank,path,label,similarity'];
  for (const a of result.answers)
    a.neighbours.forEach((n, r) =>
      lines.push(
        [csvField(a.query), String(r + 1), csvField(n.path), csvField(n.label ?? ''), n.similarity.toFixed(4)].join(
          ',',
        ),
      ),
    );
  return `${lines.join('\n')}\n`;
}

async function thumb(file: string | null): Promise<string> {
  if (!file) return '';
  const bytes = await sharp(file, { pages: 1 })
    .resize(128, 128, { fit: 'cover' })
    .jpeg({ quality: 75 })
    .toBuffer()
    .catch(() => null);
  return bytes ? `<img style="width:128px;height:128px" src="data:image/jpeg;base64,${bytes.toString('base64')}">` : '';
}

async function similarPage(result: SimilarResult, root: string | null): Promise<string> {
  const sections: string[] = [];
  const fileOf = (p: string) => (root ? path.resolve(root, p) : null);
  for (const a of result.answers) {
    const queryFile = a.source === 'cached' ? fileOf(a.query) : isUrl(a.query) ? null : a.query;
    const figures = [
      `<figure style="width:128px"><b>query</b>${await thumb(queryFile)}<figcaption>${escapeHtml(a.query)}${a.error ? `<br><span class="wrong">${escapeHtml(a.error)}</span>` : ''}</figcaption></figure>`,
    ];
    for (const n of a.neighbours)
      figures.push(
        `<figure style="width:128px">${await thumb(fileOf(n.path))}<figcaption>${n.similarity.toFixed(3)}<br><span class="muted">${escapeHtml(n.path)}${n.label ? ` · ${escapeHtml(n.label)}` : ''}</span></figcaption></figure>`,
      );
    sections.push(`<div class="grid">${figures.join('')}</div><hr>`);
  }
  return page(
    `featcache similar (${result.answers.length} queries, split ${result.split})`,
    `<p>${result.k} nearest images of split ${escapeHtml(result.split)} by cosine similarity (${result.method} search).</p>${sections.join('\n')}`,
  );
}
