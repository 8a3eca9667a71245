/** URL fetching defaults and what counts as a URL, apart from the fetcher so that they cost no undici. */
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

export function isUrl(text: string): boolean {
  return /^https?:\/\//i.test(text.trim());
}
