/**
 * What kind of input a `--data` string names, decided without loading the readers: opening a folder dataset must not
 * pay for undici (URLs, ~50 ms to import), tar-stream or csv-parse, which load only when their kind is met.
 */
export { isUrl } from './url-defaults.js';

/** Shard file names: plain or gzipped tar, as webdataset reads them. */
export const TAR_NAME = /\.(tar|tgz|tar\.gz)$/i;

/** Whether `--data` names tar shards: a pattern or a single file, ending in .tar/.tgz/.tar.gz. */
export function isTarPattern(data: string): boolean {
  return TAR_NAME.test(data) && !/^https?:\/\//i.test(data);
}
