/** `featcache info`: the command line of the info job (src/jobs/info.ts). */
import type { Argv } from 'yargs';
import { ExitCode } from '../errors.js';
import type { CacheInfo } from '../jobs/info.js';
import { defineCommand, cacheOption, emit, jsonOption } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

function formatInfo(r: CacheInfo, failures: boolean, damagedPartRemedy: string): string {
  const m = r.manifest;
  const lines = [
    `${r.cache}: ${m.dim}-d features of ${m.modelFile} (sha256 ${m.modelSha256.slice(0, 12)}…), tap ${m.tappedTensor}, preset ${String(m.preset.name)}, exif ${m.exif}, icc ${m.icc}`,
    `  classes (${m.classes.length}): ${m.classes.slice(0, 10).join(', ')}${m.classes.length > 10 ? ', …' : ''}`,
    ...r.splits.map(
      (s) =>
        `  ${s.split}: ${s.rows} rows in ${s.parts} parts, ${s.failures.length} failed images` +
        `${s.setAside.length > 0 ? `, ${s.setAside.length} damaged parts set aside earlier` : ''}`,
    ),
    ...r.splits.flatMap((s) => s.damaged.map((d) => `  DAMAGED ${d.file}: ${d.problem}`)),
  ];
  if (r.healthy === true)
    lines.push('  check: every part matches the length and sha256 recorded at its commit, and agrees with its index');
  if (r.healthy === false) lines.push(`  check: damaged parts found; ${damagedPartRemedy}`);
  if (failures)
    for (const s of r.splits)
      for (const f of s.failures) lines.push(`  ${s.split}/${f.path}: ${f.stage}: ${f.message}`);
  return lines.join('\n');
}

export const infoCommand = defineCommand({
  ...COMMAND_TEXT['info'],
  builder: (y: Argv) =>
    y
      .option('cache', cacheOption)
      .option('failures', { type: 'boolean', default: false, describe: 'list every failed image' })
      .option('check', {
        type: 'boolean',
        default: false,
        describe: 'verify every part against its recorded length and sha256; exit 1 on damage',
      })
      .option('json', jsonOption),
  handler: async (a) => {
    const [{ info }, { DAMAGED_PART_REMEDY }] = await Promise.all([
      import('../jobs/info.js'),
      import('../store/reader.js'),
    ]);
    const result = await info({ cache: a.cache, check: a.check });
    emit(a.json, result, () => formatInfo(result, a.failures, DAMAGED_PART_REMEDY));
    if (result.healthy === false) process.exitCode = ExitCode.failed;
  },
});
