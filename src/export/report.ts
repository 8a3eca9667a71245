/**
 * The seeds' visualize_model as a page: thumbnails titled "predicted: <class> (p)", embedded so the file stands
 * alone, with the true class when an image sits in a class folder and the accuracy over those.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import type { HeadInfo } from '../head/saved.js';
import { GENERATOR_META, escapeHtml, page } from '../util/html.js';
import { requireOursOrAbsent, writeOutputFile } from '../util/output.js';

export interface Prediction {
  path: string;
  top: { label: string; probability: number }[];
  error?: string;
}

async function thumbnail(file: string): Promise<string> {
  const thumb = await sharp(file, { pages: 1 })
    .resize(224, 224, { fit: 'cover' })
    .jpeg({ quality: 80 })
    .toBuffer()
    .catch(() => null);
  return thumb ? `<img alt="${escapeHtml(file)}" src="data:image/jpeg;base64,${thumb.toString('base64')}">` : '';
}

function caption(p: Prediction, truth: string | null): string {
  const best = p.top[0]!;
  const wrong = truth !== null && truth !== best.label;
  return (
    `<figcaption class="${wrong ? 'wrong' : ''}">predicted: ${escapeHtml(best.label)} (${best.probability.toFixed(2)})` +
    `${truth !== null ? `<br><span class="muted">true: ${escapeHtml(truth)}</span>` : ''}<br><span class="muted">${escapeHtml(path.basename(p.path))}</span></figcaption>`
  );
}

/** The class folder an image sits in, when it names one of the head's classes. */
function trueClass(file: string, classes: string[]): string | null {
  const folder = path.basename(path.dirname(file));
  return classes.includes(folder) ? folder : null;
}

export async function writeReport(
  file: string,
  predictions: Prediction[],
  info: HeadInfo,
  limit: number,
): Promise<void> {
  const figures: string[] = [];
  let known = 0;
  let correct = 0;
  for (const [index, p] of predictions.entries()) {
    if (p.error) {
      figures.push(
        `<figure><figcaption class="wrong">${escapeHtml(path.basename(p.path))}: ${escapeHtml(p.error)}</figcaption></figure>`,
      );
      continue;
    }
    const truth = trueClass(p.path, info.classes);
    if (truth !== null) {
      known++;
      if (truth === p.top[0]!.label) correct++;
    }
    if (index < limit) figures.push(`<figure>${await thumbnail(p.path)}${caption(p, truth)}</figure>`);
  }
  const prov = info.provenance;
  const summary =
    `<p>${known > 0 ? `${correct} of ${known} images in a class folder predicted correctly (${((100 * correct) / known).toFixed(1)}%); ` : ''}` +
    `backbone ${escapeHtml(path.basename(prov.modelFile))} (sha256 ${prov.modelSha256.slice(0, 12)}…), tap ${escapeHtml(prov.tappedTensor)}, preset ${escapeHtml(String(prov.preset.name))}.` +
    `${predictions.length > limit ? ` Showing the first ${limit} of ${predictions.length} images (--report-limit).` : ''}</p>`;
  await fs.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await writeOutputFile(
    file,
    page(
      `featcache predictions (${predictions.length} images)`,
      `${summary}<div class="grid">${figures.join('\n')}</div>`,
    ),
    'report',
  );
}

/** A report replaces only an earlier featcache page; checked before predicting, so a refusal costs nothing. */
export async function requireReportReplaceable(file: string): Promise<void> {
  await requireOursOrAbsent(file, 'report', (content) =>
    content.subarray(0, 1024).toString('utf8').includes(GENERATOR_META),
  );
}
