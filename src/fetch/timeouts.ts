/** Download timeouts, apart from the downloader so that defaults can be read without loading undici. */
import type { DownloadTimeouts } from './download.js';

export const DEFAULT_DOWNLOAD_TIMEOUTS: Readonly<DownloadTimeouts> = Object.freeze({
  connectTimeoutMs: 15_000,
  stallTimeoutMs: 30_000,
});
