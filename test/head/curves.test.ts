import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { curvesPage, reliabilityDiagram, sweepChart } from '../../src/head/curves.js';
import { calibrationReport, classificationMetrics } from '../../src/head/metrics.js';
import { softmaxRows } from '../../src/head/model.js';

const history = [1, 2, 3].map((epoch) => ({
  epoch,
  lr: 0.01,
  trainLoss: 1 / epoch,
  trainAcc: 0.5 + epoch / 10,
  valLoss: 1.2 / epoch,
  valAcc: 0.4 + epoch / 10,
  seconds: 0.1,
}));

describe('curves page', () => {
  it('draws loss and accuracy, marks the best epoch, and escapes class names', () => {
    const metrics = classificationMetrics(Float32Array.from([0.9, 0.1, 0.2, 0.8]), Int32Array.from([0, 1]), [
      '<cat>',
      'dog & co',
    ]);
    const html = curvesPage(history, metrics, 'summary <b>', 2);
    assert.match(html, /aria-label="loss"/);
    assert.match(html, /aria-label="accuracy"/);
    assert.equal((html.match(/<polyline/g) ?? []).length, 4);
    assert.match(html, /best epoch 2/);
    assert.match(html, /&lt;cat&gt;/);
    assert.doesNotMatch(html, /<cat>|summary <b>/);
    assert.match(html, /top-1 1\.0000/);
  });

  it('adds a reliability diagram with ECE before and after, and the sweep table with the chosen cell outlined', () => {
    const logits = Float32Array.from([4, 0, 0, 4, 4, 0]);
    const c = calibrationReport(logits, Int32Array.from([0, 1, 1]), 2, 2, softmaxRows);
    const svg = reliabilityDiagram(c);
    assert.match(svg, /aria-label="reliability"/);
    assert.equal(
      (svg.match(/<circle/g) ?? []).length,
      c.bins.before.filter((b) => b.count > 0).length + c.bins.after.filter((b) => b.count > 0).length,
    );
    assert.match(svg, new RegExp(`ECE ${c.before.ece.toFixed(3)}`));
    const rows = [
      {
        normalize: 'none' as const,
        lr: 0.01,
        c: null,
        weightDecay: 0,
        epoch: 3,
        holdoutLoss: 0.5,
        holdoutAcc: 0.8,
        calibratedLoss: null,
      },
      {
        normalize: 'none' as const,
        lr: 0.1,
        c: null,
        weightDecay: 0,
        epoch: 2,
        holdoutLoss: 0.3,
        holdoutAcc: 0.9,
        calibratedLoss: 0.25,
      },
      {
        normalize: 'l2' as const,
        lr: 0.01,
        c: null,
        weightDecay: 0,
        epoch: 5,
        holdoutLoss: 0.7,
        holdoutAcc: 0.7,
        calibratedLoss: 0.2,
      },
    ];
    const table = sweepChart(rows, rows[2]);
    assert.equal((table.match(/<table/g) ?? []).length, 2, 'one table per normalisation');
    assert.equal((table.match(/outline:2px/g) ?? []).length, 1);
    assert.match(table, /calibrated 0\.2000, epoch 5" style="outline:2px solid #000[^>]*>0\.700/);
    const page = curvesPage(history, null, 's', null, { calibration: c, sweep: rows });
    assert.match(page, /reliability/);
    assert.match(page, /Sweep: held-out accuracy/);
  });
});
