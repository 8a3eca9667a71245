/** Debian's Chromium driven by playwright-core, for tests that need a real browser; skipped with a reason when absent. */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type { Browser } from 'playwright-core';
import { repoRoot } from './helpers.js';

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

function hasPlaywright(): boolean {
  try {
    createRequire(import.meta.url).resolve('playwright-core');
    return true;
  } catch {
    return false;
  }
}

/** `skip` option for browser tests: a reason when Chromium or playwright-core is missing. */
export function needsChromium(): string | false {
  if (!existsSync(CHROMIUM)) return `needs Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`;
  if (!hasPlaywright()) return 'needs the playwright-core package (npm install)';
  return false;
}

export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** Where browser tests leave screenshots for a person to look at (reports/ is ignored by git). */
export function testOutputDir(name: string): string {
  return path.resolve(process.env.FEATCACHE_TEST_OUTPUT ?? path.join(repoRoot, 'reports/test-output'), name);
}
