/**
 * The data directory is root's alone: live session references, secrets and
 * disks are in it. New files get no group/other access (umask), the files we
 * make get explicit modes, and an install made before this is tightened on start.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** No access for group and others on anything the daemon or its children create. */
export const PRIVATE_UMASK = 0o077;
export const PRIVATE_FILE = 0o600;
export const PRIVATE_DIR = 0o700;

/** At most this many entries are visited when tightening an existing install. */
const WALK_LIMIT = 200_000;
const DEPTH_LIMIT = 16;

/** Sets the umask and makes the data directory (0700), tightening what is already in it. */
export function privateDataDir(dataDir: string): { tightened: number } {
  process.umask(PRIVATE_UMASK);
  mkdirSync(dataDir, { recursive: true, mode: PRIVATE_DIR });
  return { tightened: tighten(dataDir) };
}

/**
 * Removes group and other access below `dir` (symlinks are not followed, nor
 * changed); returns how many entries were changed. Bounded in count and depth.
 */
export function tighten(dir: string): number {
  let changed = 0;
  let visited = 0;
  const visit = (path: string, depth: number): void => {
    if (++visited > WALK_LIMIT) return;
    let st;
    try {
      st = lstatSync(path);
    } catch {
      return; // vanished meanwhile
    }
    if (st.isSymbolicLink()) return;
    if ((st.mode & 0o077) !== 0) {
      try {
        chmodSync(path, st.mode & 0o7700);
        changed++;
      } catch {
        // not ours to change (e.g. a read-only mount): leave it
      }
    }
    if (!st.isDirectory() || depth >= DEPTH_LIMIT) return;
    let names: string[];
    try {
      names = readdirSync(path);
    } catch {
      return;
    }
    for (const name of names) visit(join(path, name), depth + 1);
  };
  visit(dir, 0);
  return changed;
}

/** Explicit 0600 on files that exist (a database and its journals, keys). */
export function makePrivate(...paths: string[]): void {
  for (const p of paths) if (existsSync(p)) chmodSync(p, PRIVATE_FILE);
}
