/**
 * The human summary line each command prints when it is done (--json prints the result instead). The jobs' own
 * progress lines (epochs, sweep) stay in jobs/, where they are logged as the work happens.
 */
import * as path from 'node:path';
import type { ExtractResult } from '../jobs/extract.js';
import { settingText } from '../jobs/setting-text.js';
import type { TrainHeadResult } from '../jobs/train-head.js';

export function extractSummaryLine(r: ExtractResult): string {
  const t = r.timings;
  const failed =
    (r.failed > 0 ? `; ${r.failed} failed (see 'featcache info --cache ${r.cache} --failures')` : '') +
    (r.ledgerFailed > 0
      ? `; ${r.ledgerFailed} failed in an earlier run and are still in the ledger (--retry-failed retries them)`
      : '');
  const skipped = r.skipped.length > 0 ? `; ${r.skipped.length} non-image files skipped` : '';
  const stopped = r.interrupted ? ' — interrupted; re-run the same command to resume' : '';
  return (
    `extract ${r.split}: ${r.extracted} extracted, ${r.unchanged} unchanged, ${r.removed} removed of ${r.dataset} images → ${r.cache}/${r.split} ` +
    `(${r.dim}-d, ${r.provider}${r.precision === 'fp32' ? '' : ` ${r.precision}`}, ${r.imagesPerSecond.toFixed(1)} img/s; ${t.wallS.toFixed(1)} s: decode ${t.decodeWaitS.toFixed(1)} s exposed ` +
    `(${t.decodeBusyS.toFixed(1)} s busy), inference ${t.inferS.toFixed(1)} s, write ${t.writeS.toFixed(1)} s, setup ${t.setupS.toFixed(1)} s; bottleneck: ${r.bottleneck})` +
    `${failed}${skipped}${stopped}`
  );
}

export function trainSummaryLine(r: TrainHeadResult): string {
  const m = r.metrics;
  const on = r.validation === 'none' ? 'train' : 'val';
  const c = r.calibration;
  return (
    `train-head: ${r.trainRows} train / ${r.valRows} val rows, ${settingText(r.setting)}${r.stoppedEarly ? ' (stopped early)' : ''}; ` +
    `${on} top-1 ${m.top1.toFixed(4)}${m.top5 === null ? '' : `, top-5 ${m.top5.toFixed(4)}`}, ECE ${c.before.ece.toFixed(3)} → ${c.after.ece.toFixed(3)} (sampling floor ${c.after.eceFloor.mean.toFixed(3)}), NLL ${c.before.nll.toFixed(3)} → ${c.after.nll.toFixed(3)} (T = ${r.temperature.toFixed(3)}); ` +
    `${r.probe ? `L-BFGS ${r.probe.iterations} iterations in ${r.probe.seconds.toFixed(2)} s` : `${(r.secondsPerEpoch ?? 0).toFixed(3)} s/epoch on ${r.engine === 'onnxruntime' ? 'onnxruntime' : r.backend}`} → ${r.head} (curves: ${path.join(r.head, 'curves.html')})`
  );
}
