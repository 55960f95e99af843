/**
 * Local root, as xapi does it: the daemon also listens on a Unix socket
 * (xapi's is /var/lib/xcp/xapi; ours is `<data-dir>/xapi`, and any path given
 * with `--local-socket`), mode 0600 so only root can connect, where a login
 * with any credentials is a local superuser session. `XenAPI.xapi_local()`
 * and Ansible's XenServer modules with `hostname: localhost` rely on it.
 */
import { chmodSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import type http from 'node:http';
import { dirname, join } from 'node:path';
import { PRIVATE_FILE } from './private-files.ts';

/** The socket's name in the data directory, as xapi's in /var/lib/xcp. */
export const LOCAL_ROOT_SOCKET = 'xapi';

/** Longest path a Unix socket can have on Linux (sun_path is 108 bytes, NUL included). */
const MAX_SOCKET_PATH = 107;

export const localRootSocketOf = (dataDir: string): string => join(dataDir, LOCAL_ROOT_SOCKET);

/** Removes a stale socket (or a symlink) at `path`; anything else there is not ours to remove. */
function clearStale(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket() && !st.isSymbolicLink()) throw new Error(`${path} exists and is not a socket: not replacing it with the local root socket`);
  rmSync(path, { force: true });
}

/** Listens on `path` (0600, its directory made 0700 if missing). */
export async function listenLocalRoot(server: http.Server, path: string): Promise<void> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw new Error(`local root socket path too long for a Unix socket: ${path}`);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  clearStale(path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(path, PRIVATE_FILE);
}
