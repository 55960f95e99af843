/**
 * `<data-dir>/xenon.pid`: how `xenon stop` finds the daemon of a data
 * directory, and what keeps two daemons off one data directory.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { processAlive } from '../../host/processes.ts';

export const PID_FILE = 'xenon.pid';

export { processAlive };

/** The pid of the daemon running on this data directory, if one is. */
export function daemonPid(dataDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, PID_FILE), 'utf8').trim());
  } catch {
    return undefined;
  }
  return Number.isInteger(pid) && pid > 1 && pid !== process.pid && processAlive(pid) ? pid : undefined;
}

/**
 * Records this process as the data directory's daemon; throws if another
 * live daemon has it. Returns the release function (removes the file if it
 * still names this process).
 */
export function acquirePidFile(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const other = daemonPid(dataDir);
  if (other !== undefined) {
    throw new Error(`a daemon (pid ${other}) is already running on ${dataDir}; stop it first: xenon stop --data-dir ${dataDir}`);
  }
  const file = join(dataDir, PID_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${process.pid}\n`, { mode: 0o644 });
  renameSync(tmp, file);
  return () => {
    try {
      if (readFileSync(file, 'utf8').trim() === String(process.pid)) rmSync(file);
    } catch {
      // already gone
    }
  };
}
