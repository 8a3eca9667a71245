/**
 * What the audit writes: a self-contained HTML page (summary, the estimated noise matrix, then each issue with
 * its thumbnail, worst first), CSV lists and the id,label file of suggested labels. Every string that came from
 * the user's data (paths, class names) is escaped; thumbnails are embedded so the page stands alone.
 */
import sharp from 'sharp';
import { csvText } from '../util/csv.js';
import { escapeHtml, page } from '../util/html.js';

export interface AuditIssue {
  /** Row index in the split. */
  row: number;
  path: string;
  /** The image file (for the thumbnail): where extract read it, or under --data; null when unknown. */
  file: string | null;
  given: string;
  /** The label the row probably should have (null when nothing better is known). */
  suggested: string | null;
  /** The row's label quality (self-confidence or normalised margin): low = likely wrong. */
  labelQuality: number | null;
  selfConfidence: number | null;
  /** Flagged by confident learning (prune by noise rate). */
  confidentLearning: boolean;
  /** Share of the k nearest neighbours with another label. */
  knnDisagreement: number;
  knnMajority: string;
  knnFlag: boolean;
  meanNeighbourDistance: number;
  distanceOutlier: boolean;
  /** Entropy of the cross-fitted prediction over log(classes). */
  entropy: number | null;
  flat: boolean;
}

export interface ConfusedPair {
  given: string;
  likelyTrue: string;
  /** Estimated rows labelled `given` that are really `likelyTrue`: n·Q[given][true]. */
  estimatedRows: number;
  /** The same as a share of the rows labelled `given`. */
  shareOfGiven: number;
}

export interface ReportInput {
  title: string;
  summaryLines: string[];
  classes: string[];
  /** classes × classes, P(true | given). */
  noiseMatrix: Float64Array;
  confused: ConfusedPair[];
  labelIssues: AuditIssue[];
  outliers: AuditIssue[];
  limit: number;
}

const quote = csvText;
const num = (v: number | null, digits = 4) => (v === null || !Number.isFinite(v) ? '' : v.toFixed(digits));

export function issuesCsv(issues: AuditIssue[]): string {
  const header = [
    'path',
    'given',
    'suggested',
    'label_quality',
    'self_confidence',
    'confident_learning',
    'knn_disagreement',
    'knn_majority',
    'knn_flag',
    'mean_neighbour_distance',
    'distance_outlier',
    'entropy',
    'flat',
  ];
  const rows = issues.map((i) =>
    [
      quote(i.path),
      quote(i.given),
      quote(i.suggested ?? ''),
      num(i.labelQuality),
      num(i.selfConfidence),
      String(i.confidentLearning),
      num(i.knnDisagreement),
      quote(i.knnMajority),
      String(i.knnFlag),
      num(i.meanNeighbourDistance),
      String(i.distanceOutlier),
      num(i.entropy),
      String(i.flat),
    ].join(','),
  );
  return `${[header.join(','), ...rows].join('\n')}\n`;
}

export function noiseMatrixCsv(classes: string[], matrix: Float64Array): string {
  const m = classes.length;
  const lines = [['given \\ likely true', ...classes].map(quote).join(',')];
  for (let i = 0; i < m; i++)
    lines.push([quote(classes[i]!), ...Array.from({ length: m }, (_, j) => num(matrix[i * m + j]!))].join(','));
  return `${lines.join('\n')}\n`;
}

/** id,label for every row: the suggested label where confident learning flagged the row, else the given one. */
export function labelsCsv(paths: string[], labels: string[]): string {
  return `${['id,label', ...paths.map((p, r) => `${quote(p)},${quote(labels[r]!)}`)].join('\n')}\n`;
}

async function thumbnail(issue: AuditIssue): Promise<string> {
  if (issue.file === null)
    return `<div class="muted">(no thumbnail: the cache does not record where ${escapeHtml(issue.path)} was; pass --data)</div>`;
  const thumb = await sharp(issue.file, { pages: 1 })
    .resize(160, 160, { fit: 'cover' })
    .jpeg({ quality: 75 })
    .toBuffer()
    .catch(() => null);
  return thumb
    ? `<img alt="${escapeHtml(issue.path)}" src="data:image/jpeg;base64,${thumb.toString('base64')}">`
    : `<div class="muted">(no thumbnail: cannot read ${escapeHtml(issue.file)})</div>`;
}

function matrixTable(classes: string[], matrix: Float64Array): string {
  const m = classes.length;
  // Large label sets: the class-level list says what matters, a 1,000-column table does not.
  if (m > 30) return `<p class="muted">${m} classes: the full matrix is in noise-matrix.csv.</p>`;
  const head = `<tr><th>given \\ likely true</th>${classes.map((c) => `<th>${escapeHtml(c)}</th>`).join('')}</tr>`;
  const rows = classes.map(
    (c, i) =>
      `<tr><th>${escapeHtml(c)}</th>${Array.from({ length: m }, (_, j) => {
        const v = matrix[i * m + j]!;
        const style = i !== j && v >= 0.01 ? ' class="wrong"' : '';
        return `<td${style}>${v.toFixed(3)}</td>`;
      }).join('')}</tr>`,
  );
  return `<table>${head}${rows.join('')}</table>`;
}

async function issueFigure(issue: AuditIssue): Promise<string> {
  const flags = [
    issue.confidentLearning ? 'confident learning' : '',
    issue.knnFlag ? 'neighbours' : '',
    issue.distanceOutlier ? 'far from all' : '',
    issue.flat ? 'unlike any class' : '',
  ].filter(Boolean);
  return (
    `<figure style="width:160px">${await thumbnail(issue)}<figcaption>` +
    `given: <b>${escapeHtml(issue.given)}</b>` +
    (issue.suggested !== null && issue.suggested !== issue.given
      ? `<br><span class="wrong">suggested: ${escapeHtml(issue.suggested)}</span>`
      : '') +
    `<br><span class="muted">${escapeHtml(flags.join(' + '))}<br>` +
    `quality ${num(issue.labelQuality, 3)}, kNN ${num(issue.knnDisagreement, 2)} (${escapeHtml(issue.knnMajority)})<br>` +
    `distance ${num(issue.meanNeighbourDistance, 3)}, entropy ${num(issue.entropy, 2)}<br>` +
    `${escapeHtml(issue.path)}</span></figcaption></figure>`
  );
}

export async function reportHtml(input: ReportInput): Promise<string> {
  const section = async (title: string, issues: AuditIssue[]) => {
    const shown = issues.slice(0, input.limit);
    const figures: string[] = [];
    for (const issue of shown) figures.push(await issueFigure(issue));
    const more = issues.length > shown.length ? ` (showing the worst ${shown.length}; all in the CSV)` : '';
    return `<h2>${escapeHtml(title)}: ${issues.length}${escapeHtml(more)}</h2><div class="grid">${figures.join('\n')}</div>`;
  };
  const confused =
    input.confused.length === 0
      ? '<p>No class is estimated to hold another class’s images.</p>'
      : `<table><tr><th>given</th><th>likely true</th><th>estimated rows</th><th>share of given</th></tr>${input.confused
          .map(
            (c) =>
              `<tr><td>${escapeHtml(c.given)}</td><td>${escapeHtml(c.likelyTrue)}</td><td>${c.estimatedRows.toFixed(1)}</td><td>${(100 * c.shareOfGiven).toFixed(1)}%</td></tr>`,
          )
          .join('')}</table>`;
  const body =
    `${input.summaryLines.map((l) => `<p>${escapeHtml(l)}</p>`).join('')}` +
    `<h2>Which classes hold which (estimated from confident learning)</h2>${confused}` +
    `<h2>Estimated noise matrix: P(likely true | given)</h2>${matrixTable(input.classes, input.noiseMatrix)}` +
    (await section('Label issues (both flags first, then by label quality)', input.labelIssues)) +
    (await section('Outliers (far from all, then unlike any class)', input.outliers));
  return page(input.title, body);
}
