/** `featcache inspect MODEL`: the command line of the inspect job (src/jobs/inspect.ts). */
import type { Argv } from 'yargs';
import type { InspectResult } from '../jobs/inspect.js';
import { DEFAULT_INSPECT_OPTIONS } from '../jobs/defaults.js';
import { defineCommand, emit, jsonOption } from './flags.js';
import { COMMAND_TEXT } from './command-text.js';

function formatInspect(r: InspectResult): string {
  const shape = (s: unknown) => JSON.stringify(s);
  const lines = [
    `${r.file}  sha256 ${r.sha256}`,
    `  opsets: ${r.opsets.join(', ')}; ${r.nodes} nodes`,
    ...r.inputs.map((i) => `  input  ${i.name} ${i.elemType} ${shape(i.shape)}`),
    ...r.outputs.map((o) => `  output ${o.name} ${o.elemType} ${shape(o.shape)}`),
    '  tap points (--tap):',
    ...r.candidates.map(
      (c) =>
        `  ${c.default ? '*' : ' '} ${c.kind === 'pool' ? c.name : c.name.padEnd(12)}  ${c.opType}  ${c.tensor}  ${shape(c.shape)}${c.default ? '  (default: --tap avgpool)' : ''}`,
    ),
  ];
  if (!r.defaultTap) lines.push('  no global average pool found: pass --tap with a node, tensor or module name above');
  return lines.join('\n');
}

export const inspectCommand = defineCommand({
  ...COMMAND_TEXT['inspect'],
  builder: (y: Argv) =>
    y
      .positional('model', { type: 'string', describe: 'ONNX file' })
      .option('device', {
        type: 'string',
        default: DEFAULT_INSPECT_OPTIONS.device,
        describe: 'where the shape probe runs: cpu | auto | cuda[:N]',
      })
      .option('json', jsonOption),
  handler: async (a) => {
    const { inspect } = await import('../jobs/inspect.js');
    const result = await inspect(a.model!, { device: a.device });
    emit(a.json, result, () => formatInspect(result));
  },
});
