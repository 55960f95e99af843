// One data directory per network namespace. Bridge names (xenbr0, xapi1, …)
// and the user-space datapath's devices are per namespace, so a second
// daemon on another data directory in the same namespace would fight the
// first over them. Before networking starts, a daemon looks for Open vSwitch
// daemons and bridges of another data directory in its namespace and refuses
// to start if it finds any; otherwise it records its claim on the namespace
// (a file under /run, which goes away at reboot with everything it guards).
import { mkdir, readdir, readFile, realpath, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Runner } from './exec.ts';
import { NetworkError } from './backend.ts';
import { BRIDGE_ALIAS, listLinks, TAP_ALIAS } from './links.ts';

export const CLAIM_DIR = '/run/xenon/netns';

/** Another data directory's networking found in this namespace. */
export class NamespaceTakenError extends NetworkError {
  override name = 'NamespaceTakenError';
  constructor(readonly otherDataDir: string, readonly found: string[]) {
    super(
      `another Xenon data directory, ${otherDataDir}, has networking in this network namespace: ${found.join('; ')}. ` +
      `Two data directories cannot share a network namespace (bridge names would clash). Either stop it and remove its ` +
      `guests, bridges and Open vSwitch daemons with \`xenon stop --data-dir ${otherDataDir} --guests\`, or start this ` +
      `daemon in a network namespace of its own (\`ip netns exec NAME xenon server …\`), or without networking (\`--network none\`).`,
    );
  }
}

interface OvsProcess { pid: number; name: string; runDir: string }

/** The namespace this process is in, as `dev-inode` of its nsfs file. */
export async function namespaceId(pid: number | 'self'): Promise<string> {
  const s = await stat(`/proc/${pid}/ns/net`);
  return `${s.dev}-${s.ino}`;
}

/** Xenon-run ovsdb-server / ovs-vswitchd processes in the given namespace (run dir `<dataDir>/run/ovs`). */
async function xenonOvsProcesses(ns: string): Promise<OvsProcess[]> {
  const found: OvsProcess[] = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 1) continue;
    try {
      const name = (await readFile(`/proc/${pid}/comm`, 'utf8')).trim();
      if (name !== 'ovsdb-server' && name !== 'ovs-vswitchd') continue;
      const pidfile = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').find((a) => a.startsWith('--pidfile='));
      if (!pidfile || (await namespaceId(pid)) !== ns) continue;
      const runDir = dirname(pidfile.slice('--pidfile='.length));
      if (runDir.endsWith('/run/ovs')) found.push({ pid, name, runDir });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/** The pid in a daemon's pid file, if that process is alive. */
async function livePid(file: string): Promise<number | undefined> {
  const pid = Number((await readClaim(file)) ?? NaN);
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  try {
    await stat(`/proc/${pid}`);
    return pid;
  } catch {
    return undefined;
  }
}

async function readClaim(file: string): Promise<string | undefined> {
  try {
    return (await readFile(file, 'utf8')).trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Refuses (NamespaceTakenError) if Open vSwitch daemons or bridges of another
 * data directory are in this process's network namespace; else claims it
 * for `dataDir`. `runner` lists links in the same namespace.
 */
export async function claimNetworkNamespace(dataDir: string, runner: Runner): Promise<void> {
  const ours = await realpath(dataDir);
  const ns = await namespaceId('self');
  const claimFile = join(CLAIM_DIR, ns);
  const others = new Map<string, string[]>();
  const note = (dir: string, what: string): void => void others.set(dir, [...(others.get(dir) ?? []), what]);
  for (const p of await xenonOvsProcesses(ns)) {
    const dir = p.runDir.slice(0, -'/run/ovs'.length);
    if (dir !== ours) note(dir, `${p.name} (pid ${p.pid}, run directory ${p.runDir})`);
  }
  const claimant = await readClaim(claimFile);
  if (claimant && claimant !== ours) {
    const daemon = await livePid(join(claimant, 'xenon.pid'));
    if (daemon) note(claimant, `its daemon (pid ${daemon})`);
    const links = (await listLinks(runner)).filter((l) => l.ifalias === BRIDGE_ALIAS || l.ifalias === TAP_ALIAS);
    const bridges = links.filter((l) => l.ifalias === BRIDGE_ALIAS).map((l) => l.ifname);
    const taps = links.filter((l) => l.ifalias === TAP_ALIAS).map((l) => l.ifname);
    if (bridges.length) note(claimant, `bridge${bridges.length > 1 ? 's' : ''} ${bridges.join(', ')}`);
    if (taps.length) note(claimant, `guest tap${taps.length > 1 ? 's' : ''} ${taps.join(', ')}`);
  }
  const [first] = others;
  if (first) throw new NamespaceTakenError(first[0], first[1]);
  if (claimant !== ours) {
    await mkdir(CLAIM_DIR, { recursive: true, mode: 0o755 });
    const tmp = `${claimFile}.${process.pid}.tmp`;
    await writeFile(tmp, `${ours}\n`, { mode: 0o644 });
    await rename(tmp, claimFile);
  }
}

/** The data directory that claimed this process's network namespace, if any. */
export async function namespaceClaimant(): Promise<string | undefined> {
  return readClaim(join(CLAIM_DIR, await namespaceId('self')));
}
