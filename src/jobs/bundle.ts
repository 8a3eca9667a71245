/** `bundle`: a trained head and its backbone fused into one self-describing ONNX classifier file. */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { FeatcacheError, invalidParameter, optionName } from '../errors.js';
import { type BundleMetadata, buildBundle, isBundleFile } from '../export/bundle.js';
import { exists, writeBytesAtomic } from '../util/fsx.js';
import { DEFAULT_BUNDLE_OPTIONS } from './defaults.js';

export { DEFAULT_BUNDLE_OPTIONS };

export interface BundleOptions {
  /** Head directory written by train-head. */
  head: string;
  /** The ONNX file to write. An existing file is replaced only if it is itself a featcache bundle. */
  out: string;
  /** Backbone file; default: the one recorded in the head (checked by sha256). */
  model: string | undefined;
  log: (line: string) => void;
}

export interface BundleResult {
  out: string;
  bytes: number;
  metadata: BundleMetadata;
}

export async function bundle(partial: Partial<BundleOptions> = {}): Promise<BundleResult> {
  const options: BundleOptions = { ...DEFAULT_BUNDLE_OPTIONS, ...partial };
  if (typeof options.out !== 'string' || !options.out.endsWith('.onnx'))
    throw invalidParameter('out', 'a file name ending in .onnx', options.out);
  // The user's files are sacred: only a file featcache can prove it wrote (bundle metadata) is replaced.
  if ((await exists(options.out)) && !(await isBundleFile(options.out))) {
    throw new FeatcacheError(
      `${optionName('out')}: ${options.out} exists and is not a featcache bundle; choose another name or move it away`,
    );
  }
  const { bytes, metadata } = await buildBundle({ head: options.head, model: options.model });
  await fs.mkdir(path.dirname(path.resolve(options.out)), { recursive: true });
  await writeBytesAtomic(options.out, bytes);
  options.log(
    `bundle: wrote ${options.out} (${(bytes.byteLength / 1e6).toFixed(1)} MB, ${metadata.classes.length} classes, backbone ${metadata.provenance.backbone.file})`,
  );
  return { out: options.out, bytes: bytes.byteLength, metadata };
}
