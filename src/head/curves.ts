/** Training curves as a self-contained HTML page with inline SVG: opens in any browser, no plotting library. */
import { escapeHtml, page } from '../util/html.js';
import type { CalibrationReport, Metrics, ReliabilityBin } from './metrics.js';
import type { EpochStats } from './model.js';
import type { SweepRow } from './plan.js';

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
    const points = s.values
      .map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`))
      .filter(Boolean);
    return `<polyline fill="none" stroke="${s.colour}" stroke-width="2" points="${points.join(' ')}"/>`;
  });
  const best =
    marker === null
      ? ''
      : `<line x1="${x(marker - 1)}" y1="${pad.top}" x2="${x(marker - 1)}" y2="${height - pad.bottom}" stroke="#2ca02c" stroke-dasharray="4 3"/>` +
        `<text x="${x(marker - 1) + 4}" y="${height - pad.bottom - 6}" font-size="11" fill="#2ca02c">best epoch ${marker}</text>`;
  const legend = series.map(
    (s, i) => `<text x="${pad.left + 10 + i * 90}" y="16" fill="${s.colour}">${escapeHtml(s.name)}</text>`,
  );
  const ticks = [lo, (lo + hi) / 2, hi].map((v) => `<text x="4" y="${y(v) + 4}" font-size="11">${v.toFixed(3)}</text>`);
  return `<svg width="${width}" height="${height}" role="img" aria-label="${escapeHtml(title)}" style="border:1px solid #ddd;margin:6px">
<text x="${width - pad.right}" y="16" text-anchor="end" font-weight="bold">${escapeHtml(title)}</text>
<line x1="${pad.left}" y1="${height - pad.bottom}" x2="${width - pad.right}" y2="${height - pad.bottom}" stroke="#999"/>
<text x="${(width + pad.left) / 2}" y="${height - 8}" font-size="11" text-anchor="middle">epoch (1–${epochs})</text>
${ticks.join('\n')}${best}${lines.join('\n')}${legend.join('\n')}</svg>`;
}

function confusionTable(metrics: Metrics): string {
  const names = metrics.perClass.map((c) => c.name);
  if (names.length > 40)
    return `<p class="muted">${names.length} classes: see metrics.json for the confusion matrix.</p>`;
  const header = `<tr><th>true \\ predicted</th>${names.map((n) => `<th>${escapeHtml(n)}</th>`).join('')}<th>accuracy</th></tr>`;
  const rows = metrics.confusion.map(
    (row, i) =>
      `<tr><th>${escapeHtml(names[i]!)}</th>${row.map((v) => `<td>${v}</td>`).join('')}<td>${metrics.perClass[i]!.accuracy?.toFixed(3) ?? '—'}</td></tr>`,
  );
  return `<table>${header}${rows.join('')}</table>`;
}

/** Reliability diagram: accuracy against mean confidence per bin, before and after temperature; the diagonal is perfect. */
export function reliabilityDiagram(c: CalibrationReport, size = 260): string {
  const pad = 36;
  const span = size - 2 * pad;
  const x = (v: number) => pad + v * span;
  const y = (v: number) => size - pad - v * span;
  const points = (bins: ReliabilityBin[], colour: string) =>
    bins
      .filter((b) => b.count > 0)
      .map(
        (b) =>
          `<circle cx="${x(b.confidence!).toFixed(1)}" cy="${y(b.accuracy!).toFixed(1)}" r="${Math.min(7, 2 + Math.sqrt(b.count) / 2).toFixed(1)}" fill="${colour}" fill-opacity="0.7"><title>${b.count} rows: confidence ${b.confidence!.toFixed(3)}, accuracy ${b.accuracy!.toFixed(3)}</title></circle>`,
      )
      .join('');
  return `<svg width="${size}" height="${size}" role="img" aria-label="reliability" style="border:1px solid #ddd;margin:6px">
<text x="${size / 2}" y="16" text-anchor="middle" font-weight="bold">reliability (15 bins)</text>
<line x1="${x(0)}" y1="${y(0)}" x2="${x(1)}" y2="${y(1)}" stroke="#999" stroke-dasharray="4 3"/>
<line x1="${x(0)}" y1="${y(0)}" x2="${x(1)}" y2="${y(0)}" stroke="#999"/><line x1="${x(0)}" y1="${y(0)}" x2="${x(0)}" y2="${y(1)}" stroke="#999"/>
<text x="${size / 2}" y="${size - 8}" font-size="11" text-anchor="middle">confidence</text>
<text x="10" y="${size / 2}" font-size="11" transform="rotate(-90 10 ${size / 2})" text-anchor="middle">accuracy</text>
${points(c.bins.before, '#d62728')}${points(c.bins.after, '#1f77b4')}
<text x="${pad + 4}" y="${pad}" font-size="11" fill="#d62728">before: ECE ${c.before.ece.toFixed(3)}</text>
<text x="${pad + 4}" y="${pad + 14}" font-size="11" fill="#1f77b4">T = ${c.temperature.toFixed(2)}: ECE ${c.after.ece.toFixed(3)}</text></svg>`;
}

/** The sweep as a heat map per normalisation: cells held-out accuracy; rows learning rate and columns weight decay, or one row of C for the probe. */
export function sweepChart(rows: SweepRow[], chosen: SweepRow | null = null): string {
  if (rows.length === 0) return '';
  const best = chosen ?? rows.reduce((a, b) => (b.holdoutLoss < a.holdoutLoss ? b : a));
  const isBest = (r: SweepRow) =>
    r.normalize === best.normalize && r.lr === best.lr && r.c === best.c && r.weightDecay === best.weightDecay;
  const accs = rows.map((r) => r.holdoutAcc);
  const [lo, hi] = [Math.min(...accs), Math.max(...accs)];
  const colour = (a: number) => `hsl(${(120 * (a - lo)) / (hi - lo || 1)}, 60%, 75%)`;
  const cell = (r: SweepRow) => {
    const outline = isBest(r) ? 'outline:2px solid #000;' : r.tied ? 'outline:1px dashed #000;' : '';
    const calibrated = r.calibratedLoss === null ? '' : `, calibrated ${r.calibratedLoss.toFixed(4)}`;
    const at = r.epoch === null ? `${r.iterations ?? '?'} iterations` : `epoch ${r.epoch}`;
    const shown =
      r.epoch === null ? (r.calibratedLoss ?? r.holdoutLoss).toFixed(3) : `${r.holdoutLoss.toFixed(3)} @${r.epoch}`;
    return `<td title="loss ${r.holdoutLoss.toFixed(4)}${calibrated}, ${at}" style="${outline}background:${colour(r.holdoutAcc)}">${r.holdoutAcc.toFixed(3)}<br><span class="muted">${shown}</span></td>`;
  };
  const probe = rows.every((r) => r.c !== null);
  const tables = [...new Set(rows.map((r) => r.normalize))].map((normalize) => {
    const mine = rows.filter((r) => r.normalize === normalize);
    if (probe) {
      const header = `<tr><th>${escapeHtml(normalize)}: C</th>${mine.map((r) => `<th>${r.c}</th>`).join('')}</tr>`;
      return `<table style="display:inline-table;margin-right:12px">${header}<tr><th></th>${mine.map(cell).join('')}</tr></table>`;
    }
    const lrs = [...new Set(mine.map((r) => r.lr))];
    const wds = [...new Set(mine.map((r) => r.weightDecay))];
    const header = `<tr><th>${escapeHtml(normalize)}: lr \\ wd</th>${wds.map((w) => `<th>${w}</th>`).join('')}</tr>`;
    const body = lrs
      .map(
        (lr) =>
          `<tr><th>${lr}</th>${wds.map((wd) => cell(mine.find((m) => m.lr === lr && m.weightDecay === wd)!)).join('')}</tr>`,
      )
      .join('');
    return `<table style="display:inline-table;margin-right:12px">${header}${body}</table>`;
  });
  const title = probe
    ? 'Sweep: held-out accuracy (calibrated NLL) per C; outlined: chosen; dashed: within one standard error of the best calibrated NLL'
    : "Sweep: held-out accuracy (loss @ best epoch); outlined: chosen (lowest held-out NLL after temperature among each normalisation's best)";
  return `<h2>${title}</h2><div>${tables.join('')}</div>`;
}

export interface CurvesExtras {
  calibration?: CalibrationReport | null;
  sweep?: SweepRow[] | null;
  chosen?: SweepRow | null;
}

export function curvesPage(
  history: EpochStats[],
  metrics: Metrics | null,
  summary: string,
  bestEpoch: number | null = null,
  extras: CurvesExtras = {},
): string {
  const loss = lineChart(
    'loss',
    [
      { name: 'train', colour: '#1f77b4', values: history.map((h) => h.trainLoss) },
      { name: 'val', colour: '#d62728', values: history.map((h) => h.valLoss) },
    ],
    bestEpoch,
  );
  const acc = lineChart(
    'accuracy',
    [
      { name: 'train', colour: '#1f77b4', values: history.map((h) => h.trainAcc) },
      { name: 'val', colour: '#d62728', values: history.map((h) => h.valAcc) },
    ],
    bestEpoch,
  );
  const reliability = extras.calibration ? reliabilityDiagram(extras.calibration) : '';
  const c = extras.calibration;
  const calibrationText = c
    ? `<p>Calibration: ECE ${c.before.ece.toFixed(4)} → ${c.after.ece.toFixed(4)}, NLL ${c.before.nll.toFixed(4)} → ${c.after.nll.toFixed(4)} with temperature ${c.temperature.toFixed(3)}. On ${c.bins.after.reduce((n, b) => n + b.count, 0)} rows a perfectly calibrated head would show an ECE of ${c.after.eceFloor.mean.toFixed(4)} from sampling alone (95th percentile ${c.after.eceFloor.p95.toFixed(4)}).</p>`
    : '';
  const metricsHtml = metrics
    ? `<h2>Validation (${metrics.count} images): top-1 ${metrics.top1.toFixed(4)}${metrics.top5 === null ? '' : `, top-5 ${metrics.top5.toFixed(4)}`}</h2>${confusionTable(metrics)}`
    : '<p class="muted">No validation split: metrics are on the training data.</p>';
  return page(
    'featcache train-head',
    `<p>${escapeHtml(summary)}</p><div>${loss}${acc}${reliability}</div>${calibrationText}${sweepChart(extras.sweep ?? [], extras.chosen ?? null)}${metricsHtml}`,
  );
}
