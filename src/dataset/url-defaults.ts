/** URL fetching defaults, apart from the fetcher so that --help reads them without loading undici. */
import type { UrlSourceOptions } from './url.js';

export const DEFAULT_URL_OPTIONS: Readonly<UrlSourceOptions> = Object.freeze({
  concurrency: 32,
  timeoutMs: 30_000,
  retries: 3,
  backoffMs: 500,
  maxBackoffMs: 30_000,
  maxBytes: 50 * 1024 * 1024,
  userAgent: 'featcache (+https://github.com/featcache/featcache)',
});
