/** `featcache map`: the command line of the map job (src/jobs/map.ts); defaults come from DEFAULT_MAP_OPTIONS. */
import type { Argv } from 'yargs';
import { isStreamOut, MAP_COLORS } from '../map/data.js';
import { DEFAULT_MAP_OPTIONS as D } from '../jobs/defaults.js';
import type { MapOptions, MapResult } from '../jobs/map.js';
import { cacheOption, defineCommand, emit, jsonOption, logToStderr } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

/** Why a page has no thumbnails when none were asked for, or null when they were. */
function noThumbnails(thumbnails: boolean, out: string): string | null {
  if (!thumbnails) return 'none (--no-thumbnails)';
  return isStreamOut(out) ? 'none (the page went to a stream, with no folder beside it)' : null;
}

function human(r: MapResult, thumbnailsNote: string | null): string {
  const p = r.pageResult;
  return [
    `${r.page}: ${r.points} images of ${r.splits.join(' + ')}, coloured by ${r.color}`,
    `layout: ${r.layout.cached ? 'reused from the cache' : `computed in ${r.layout.seconds.toFixed(1)} s`} (UMAP over the ${r.layout.provenance.graph.k}-NN ${r.layout.provenance.graph.metric} graph, seed ${r.layout.provenance.umap.seed})`,
    `thumbnails: ${thumbnailsNote ?? `${p.thumbnailsMade} made, ${p.thumbnailsReused} reused, ${p.thumbnailsMissing} missing`}`,
    ...(r.head ? [`predictions: ${r.head}`] : []),
    ...(r.audit ? [`audit: ${r.audit}`] : []),
  ].join('\n');
}

export const mapCommand = defineCommand({
  ...COMMAND_TEXT['map'],
  builder: (y: Argv) =>
    y
      .option('cache', cacheOption)
      .option('split', {
        type: 'string',
        array: true,
        default: D.splits,
        describe: 'split(s) laid out together (--split train,val or --split train --split val)',
      })
      .option('out', { type: 'string', default: D.out, describe: 'the page to write (its thumbnails go beside it)' })
      .option('color', {
        type: 'string',
        default: D.color,
        describe: `colouring the page opens with: ${MAP_COLORS.join(' | ')}`,
      })
      .option('head', {
        type: 'string',
        describe: 'saved head whose predictions to show (default: models/head when it exists and fits the cache)',
      })
      .option('audit', {
        type: 'string',
        describe: "an audit's output directory (audit.json, scores.csv) for --color audit",
      })
      .option('k', {
        type: 'number',
        default: D.k,
        describe: 'neighbours per point in the kNN graph the layout starts from',
      })
      .option('metric', { type: 'string', default: D.metric, describe: 'cosine | l2' })
      .option('seed', { type: 'number', default: D.seed, describe: 'seed of the layout (same seed, same picture)' })
      .option('epochs', {
        type: 'number',
        default: D.epochs,
        describe: "UMAP epochs (0: umap-learn's 500, or 200 above 10 000 points)",
      })
      .option('min-dist', { type: 'number', default: D.minDist, describe: 'how tightly UMAP packs points, in [0, 1]' })
      .option('thumbnails', {
        type: 'boolean',
        default: D.thumbnails,
        describe: 'make (or reuse) thumbnails beside the page (--no-thumbnails: none)',
      })
      .option('thumbnail-size', {
        type: 'number',
        default: D.thumbnailSize,
        describe: "a thumbnail's longest side, in pixels",
      })
      .option('json', jsonOption),
  handler: async (a) => {
    const { map } = await import('../jobs/map.js');
    const result = await map({
      cache: a.cache,
      splits: [a.split]
        .flat()
        .flatMap((s) => String(s).split(','))
        .map((s) => s.trim())
        .filter(Boolean),
      out: a.out,
      color: a.color as MapOptions['color'],
      head: a.head ?? null,
      audit: a.audit ?? null,
      k: a.k,
      metric: a.metric as MapOptions['metric'],
      seed: a.seed,
      epochs: a.epochs,
      minDist: a['min-dist'],
      thumbnails: a.thumbnails,
      thumbnailSize: a['thumbnail-size'],
      log: logToStderr,
    });
    // With the page on stdout, the page owns it: the summary (or --json) goes to stderr.
    const note = noThumbnails(a.thumbnails, a.out);
    if (isStreamOut(a.out)) process.stderr.write(`${a.json ? JSON.stringify(result) : human(result, note)}\n`);
    else emit(a.json, result, () => human(result, note));
  },
});
