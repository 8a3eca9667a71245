/** MapData for the map page's tests: real monkey images on a known grid, so every point's position is known. */
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import type { MapData } from '../../src/map/data.js';
import { sharedDir } from '../support/helpers.js';

export const monkeysValidation = path.join(sharedDir, 'data/monkeys/validation');
export const GRID_COLUMNS = 10;
export const CLASSES = ['mantled howler', 'patas monkey', 'bald uakari'];
/** A path made to break a page that pastes strings into HTML. */
export const HOSTILE_PATH = 'evil/</script><img src=x onerror="window.pwned=1">&amp;.jpg';

export interface GridOptions {
  /** Points with images; two more follow without one (file null, and a file that does not exist). */
  images?: number;
}

/**
 * Point k sits at (k % 10, ⌊k / 10⌋); label ⌊3k / images⌋; predicted wrong where k % 7 === 3; audit score k / count.
 * The last two points have no usable image: one with files null (and a hostile path), one whose file is gone.
 */
export function monkeysGrid(options: GridOptions = {}): MapData {
  const images = options.images ?? 60;
  const files: string[] = [];
  for (const cls of readdirSync(monkeysValidation).sort()) {
    for (const f of readdirSync(path.join(monkeysValidation, cls)).sort().slice(0, 8))
      files.push(path.join(monkeysValidation, cls, f));
  }
  if (files.length < images) throw new Error(`monkeys validation has only ${files.length} images`);
  const count = images + 2;
  const x = new Float32Array(count);
  const y = new Float32Array(count);
  const label = new Int32Array(count);
  const split = new Uint8Array(count);
  const index = new Int32Array(count);
  const probability = new Float32Array(count);
  const score = new Float32Array(count);
  const flags: string[][] = [];
  const paths: string[] = [];
  const pointFiles: (string | null)[] = [];
  for (let k = 0; k < count; k++) {
    x[k] = k % GRID_COLUMNS;
    y[k] = Math.floor(k / GRID_COLUMNS);
    label[k] = Math.min(CLASSES.length - 1, Math.floor((CLASSES.length * k) / images));
    split[k] = k % 4 === 0 ? 1 : 0;
    index[k] = k % 7 === 3 ? (label[k]! + 1) % CLASSES.length : label[k]!;
    probability[k] = 0.5 + (k % 10) / 20;
    score[k] = k / count;
    flags.push(k % 7 === 3 ? ['label issue', 'knn disagrees'] : []);
    if (k < images) {
      pointFiles.push(files[k]!);
      paths.push(path.relative(monkeysValidation, files[k]!));
    } else if (k === images) {
      pointFiles.push(null);
      paths.push(HOSTILE_PATH);
    } else {
      pointFiles.push(path.join(monkeysValidation, 'gone/missing.jpg'));
      paths.push('gone/missing.jpg');
    }
  }
  return {
    title: 'Monkeys <b>map</b> & "friends"',
    provenance: { model: 'test grid', modelSha256: 'ab'.repeat(32), note: '</script><script>window.pwned=2</script>' },
    classes: CLASSES,
    splits: ['training', 'validation'],
    count,
    x,
    y,
    paths,
    split,
    label,
    files: pointFiles,
    predictions: { source: 'test head', index, probability },
    audit: { source: 'test audit', score, flags },
    color: 'label',
  };
}

/** Indices of the points whose prediction differs from their label. */
export function wrongPredictions(data: MapData): number[] {
  const out: number[] = [];
  for (let i = 0; i < data.count; i++)
    if (data.label[i]! >= 0 && data.predictions!.index[i] !== data.label[i]) out.push(i);
  return out;
}
