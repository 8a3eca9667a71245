/** Training curves as a self-contained HTML page with inline SVG: opens in any browser, no plotting library. */
import { escapeHtml, page } from '../util/html.js';
import type { Metrics } from './metrics.js';
import type { EpochStats } from './train.js';

interface Series {
  name: string;
  colour: string;
  values: (number | null)[];
}

function lineChart(title: string, series: Series[], marker: number | null, width = 460, height = 260): string {
  const pad = { left: 48, right: 12, top: 24, bottom: 32 };
  const all = series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v)));
  if (all.length === 0) return '';
  const [lo, hi] = [Math.min(...all), Math.max(...all)];
  const span = hi - lo || 1;
  const epochs = Math.max(...series.map((s) => s.values.length));
  const x = (i: number) => pad.left + (epochs > 1 ? (i / (epochs - 1)) * (width - pad.left - pad.right) : 0);
  const y = (v: number) => pad.top + (1 - (v - lo) / span) * (height - pad.top - pad.bottom);
  const lines = series.map((s) => {
    const points = s.values.map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
    return `<polyline fill="none" stroke="${s.colour}" stroke-width="2" points="${points.join(' ')}"/>`;
  });
  const best = marker === null ? '' :
    `<line x1="${x(marker - 1)}" y1="${pad.top}" x2="${x(marker - 1)}" y2="${height - pad.bottom}" stroke="#2ca02c" stroke-dasharray="4 3"/>` +
    `<text x="${x(marker - 1) + 4}" y="${height - pad.bottom - 6}" font-size="11" fill="#2ca02c">best epoch ${marker}</text>`;
  const legend = series.map((s, i) => `<text x="${pad.left + 10 + i * 90}" y="16" fill="${s.colour}">${escapeHtml(s.name)}</text>`);
  const ticks = [lo, (lo + hi) / 2, hi].map((v) => `<text x="4" y="${y(v) + 4}" font-size="11">${v.toFixed(3)}</text>`);
  return `<svg width="${width}" height="${height}" role="img" aria-label="${escapeHtml(title)}" style="border:1px solid #ddd;margin:6px">
<text x="${width - pad.right}" y="16" text-anchor="end" font-weight="bold">${escapeHtml(title)}</text>
<line x1="${pad.left}" y1="${height - pad.bottom}" x2="${width - pad.right}" y2="${height - pad.bottom}" stroke="#999"/>
<text x="${(width + pad.left) / 2}" y="${height - 8}" font-size="11" text-anchor="middle">epoch (1–${epochs})</text>
${ticks.join('\n')}${best}${lines.join('\n')}${legend.join('\n')}</svg>`;
}

function confusionTable(metrics: Metrics): string {
  const names = metrics.perClass.map((c) => c.name);
  if (names.length > 40) return `<p class="muted">${names.length} classes: see metrics.json for the confusion matrix.</p>`;
  const header = `<tr><th>true \\ predicted</th>${names.map((n) => `<th>${escapeHtml(n)}</th>`).join('')}<th>accuracy</th></tr>`;
  const rows = metrics.confusion.map((row, i) =>
    `<tr><th>${escapeHtml(names[i]!)}</th>${row.map((v) => `<td>${v}</td>`).join('')}<td>${metrics.perClass[i]!.accuracy?.toFixed(3) ?? '—'}</td></tr>`);
  return `<table>${header}${rows.join('')}</table>`;
}

export function curvesPage(history: EpochStats[], metrics: Metrics | null, summary: string, bestEpoch: number | null = null): string {
  const loss = lineChart('loss', [
    { name: 'train', colour: '#1f77b4', values: history.map((h) => h.trainLoss) },
    { name: 'val', colour: '#d62728', values: history.map((h) => h.valLoss) },
  ], bestEpoch);
  const acc = lineChart('accuracy', [
    { name: 'train', colour: '#1f77b4', values: history.map((h) => h.trainAcc) },
    { name: 'val', colour: '#d62728', values: history.map((h) => h.valAcc) },
  ], bestEpoch);
  const metricsHtml = metrics
    ? `<h2>Validation (${metrics.count} images): top-1 ${metrics.top1.toFixed(4)}${metrics.top5 === null ? '' : `, top-5 ${metrics.top5.toFixed(4)}`}</h2>${confusionTable(metrics)}`
    : '<p class="muted">No validation split: metrics are on the training data.</p>';
  return page('featcache train-head', `<p>${escapeHtml(summary)}</p><div>${loss}${acc}</div>${metricsHtml}`);
}
