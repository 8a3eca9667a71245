/**
 * STUB, to be replaced by the map page's own work: writes the data as JSON inside a bare page so the layout job can
 * run end to end before the page exists.
 */
import { writeOutputFile } from '../util/output.js';
import type { MapData, MapPageOptions, MapPageResult } from './data.js';

export async function writeMapPage(out: string, data: MapData, _options: MapPageOptions): Promise<MapPageResult> {
  const json = JSON.stringify({ ...data, x: [...data.x], y: [...data.y] }).replace(/</g, '\\u003c');
  await writeOutputFile(
    out,
    `<!doctype html><meta charset="utf-8"><script type="application/json" id="data">${json}</script>`,
  );
  return { page: out, thumbnailsMade: 0, thumbnailsReused: 0, thumbnailsMissing: data.count, written: [out] };
}
