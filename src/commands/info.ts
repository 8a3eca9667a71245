/** `featcache info`: what a cache holds — provenance, splits and row counts, and the failure ledger. */
import type { Argv, CommandModule } from 'yargs';
import { FeatureCache } from '../store/reader.js';
import { type Args, cacheOption, emit, jsonOption } from './options.js';

export async function cacheInfo(dir: string) {
  const cache = await FeatureCache.open(dir);
  const splits = [];
  for (const split of await cache.splits()) {
    let rows = 0;
    for await (const batch of cache.batches(split)) rows += batch.count;
    splits.push({ split, rows, parts: (await cache.partFiles(split)).length, failures: await cache.failures(split) });
  }
  return { cache: dir, manifest: cache.manifest, splits };
}

export const infoCommand: CommandModule = {
  command: 'info',
  describe: 'show a feature cache: model, tap, preset, splits, row counts and failed images',
  builder: (y: Argv) => y.option('cache', cacheOption).option('failures', { type: 'boolean', default: false, describe: 'list every failed image' }).option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as Args;
    const info = await cacheInfo(a.cache);
    emit(a.json, info, () => {
      const m = info.manifest;
      const lines = [
        `${info.cache}: ${m.dim}-d features of ${m.modelFile} (sha256 ${m.modelSha256.slice(0, 12)}…), tap ${m.tappedTensor}, preset ${String(m.preset.name)}, exif ${m.exif}, icc ${m.icc}`,
        `  classes (${m.classes.length}): ${m.classes.slice(0, 10).join(', ')}${m.classes.length > 10 ? ', …' : ''}`,
        ...info.splits.map((s) => `  ${s.split}: ${s.rows} rows in ${s.parts} parts, ${s.failures.length} failed images`),
      ];
      if (a.failures) for (const s of info.splits) for (const f of s.failures) lines.push(`  ${s.split}/${f.path}: ${f.stage}: ${f.message}`);
      return lines.join('\n');
    });
  },
};
