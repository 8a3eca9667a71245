/** Device names, apart from the session so that they parse without loading onnxruntime. */
import { invalidParameter } from '../errors.js';

export type DeviceSpec = { kind: 'auto' } | { kind: 'cpu' } | { kind: 'cuda'; deviceId: number };

export function parseDevice(value: string): DeviceSpec {
  if (value === 'auto' || value === 'cpu') return { kind: value };
  const match = /^cuda(?::(\d+))?$/.exec(value);
  if (match) return { kind: 'cuda', deviceId: Number(match[1] ?? 0) };
  throw invalidParameter('device', 'one of "auto", "cpu", "cuda", "cuda:N"', value);
}
