/** `featcache info`: the command line of the info job (src/jobs/info.ts). */
import type { Argv, CommandModule } from 'yargs';
import { type CacheInfo, info } from '../jobs/info.js';
import { type Args, cacheOption, emit, jsonOption } from './flags.js';

function formatInfo(r: CacheInfo, failures: boolean): string {
  const m = r.manifest;
  const lines = [
    `${r.cache}: ${m.dim}-d features of ${m.modelFile} (sha256 ${m.modelSha256.slice(0, 12)}…), tap ${m.tappedTensor}, preset ${String(m.preset.name)}, exif ${m.exif}, icc ${m.icc}`,
    `  classes (${m.classes.length}): ${m.classes.slice(0, 10).join(', ')}${m.classes.length > 10 ? ', …' : ''}`,
    ...r.splits.map((s) => `  ${s.split}: ${s.rows} rows in ${s.parts} parts, ${s.failures.length} failed images`),
  ];
  if (failures) for (const s of r.splits) for (const f of s.failures) lines.push(`  ${s.split}/${f.path}: ${f.stage}: ${f.message}`);
  return lines.join('\n');
}

export const infoCommand: CommandModule = {
  command: 'info',
  describe: 'show a feature cache: model, tap, preset, splits, row counts and failed images',
  builder: (y: Argv) =>
    y.option('cache', cacheOption).option('failures', { type: 'boolean', default: false, describe: 'list every failed image' }).option('json', jsonOption),
  handler: async (argv) => {
    const a = argv as Args;
    const result = await info({ cache: a.cache });
    emit(a.json, result, () => formatInfo(result, a.failures));
  },
};
