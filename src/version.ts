import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function packageVersion(name: string): string {
  try {
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export const featcacheVersion: string = (require('../../package.json') as { version: string }).version;

/** Versions recorded in every artifact's provenance. */
export function toolVersions(): Record<string, string> {
  return {
    featcache: featcacheVersion,
    onnxruntime: packageVersion('onnxruntime-node'),
    sharp: packageVersion('sharp'),
    'apache-arrow': packageVersion('apache-arrow'),
    node: process.versions.node,
  };
}
