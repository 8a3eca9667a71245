/**
 * The per-user folder featcache owns for what it derives from a user's files (hashes of models, tapped, quantised and
 * onnxruntime-optimised models). Derived files never go beside the user's model: that folder may be read-only,
 * shared or under version control.
 */
import * as os from 'node:os';
import * as path from 'node:path';

/** FEATCACHE_CACHE_DIR, else $XDG_CACHE_HOME/featcache, else ~/.cache/featcache (%LOCALAPPDATA% on Windows). */
export function featcacheCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FEATCACHE_CACHE_DIR) return path.resolve(env.FEATCACHE_CACHE_DIR);
  if (env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME)) return path.join(env.XDG_CACHE_HOME, 'featcache');
  if (process.platform === 'win32' && env.LOCALAPPDATA) return path.join(env.LOCALAPPDATA, 'featcache', 'cache');
  return path.join(os.homedir(), '.cache', 'featcache');
}
