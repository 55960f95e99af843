/** Processes on this host, as Linux's /proc shows them. */
import { readFileSync } from 'node:fs';

/** True when pid exists and is neither a zombie nor dead (a signal-0 probe, then its /proc state). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    // EPERM: it exists but is not ours to signal
    if (!(e instanceof Error && 'code' in e && e.code === 'EPERM')) return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
