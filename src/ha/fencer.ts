/**
 * The fencer: a small process of its own, so that a hung or dead daemon is
 * fenced too. A daemon talks to it in JSON lines, on its stdin (the daemon that
 * started it) or on its unix socket `<data-dir>/ha/fencer.sock` (a later daemon
 * adopting it after a restart):
 * - `{"arm":"<deadline ns>"}` after each acknowledged keepalive (CLOCK_MONOTONIC,
 *   which every process of the machine shares); `{"disarm":true}`;
 * - `{"hold":{"lease":"<id>","endpoints":[…],"ttlS":5,"graceMs":60000}}` when the
 *   daemon stops cleanly: the fencer keeps the lease alive itself (keepalives on
 *   etcd's JSON gateway) for at most `graceMs`, each acknowledged keepalive moving
 *   its deadline as the daemon's did; the next `arm` (a daemon is back) ends it;
 * - `{"stop":true}`: disarm and exit (HA disabled).
 * When the clock passes the deadline, or etcd says the held lease is gone, it
 * SIGKILLs this host's guests, says `{"fenced":N}` to every daemon connected, and
 * disarms. With no daemon connected and nothing to hold or fence, it exits.
 *
 * Run as `node --import tsx src/ha/fencer.ts <run-dir marker> <socket path>`;
 * it imports only node's own modules (and ./fencer-hold.ts, which does too).
 */
import { chmodSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { checkHold, holdKeepalive, type Hold } from './fencer-hold.ts';

const marker = process.argv[2];
const socketPath = process.argv[3];
if (!marker || !marker.startsWith('/') || !marker.endsWith('/') || !socketPath?.startsWith('/')) {
  process.stderr.write('fencer: usage: fencer.ts <absolute run directory ending in /> <socket path>\n');
  process.exit(2);
}

/** A line longer than this is not a daemon's: the connection is dropped. */
const MAX_LINE = 4096;
const MAX_CONNECTIONS = 4;
const NS_PER_MS = 1_000_000n;

// the daemon may be gone: a closed pipe must not stop the fencer
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);

let deadline: bigint | null = null;
let timer: NodeJS.Timeout | undefined;
let stdinOpen = true;
const sockets = new Set<Socket>();
let hold: (Hold & { until: bigint }) | undefined;
let holdTimer: NodeJS.Timeout | undefined;

const say = (msg: object): void => {
  const line = `${JSON.stringify(msg)}\n`;
  process.stdout.write(line);
  for (const s of sockets) s.write(line);
};
const log = (msg: string): void => void process.stderr.write(`fencer: ${msg}\n`);

const argvOf = (pid: string): string[] => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
};

const cwdOf = (pid: string): string => {
  try {
    return `${readlinkSync(`/proc/${pid}/cwd`)}/`;
  } catch {
    return '';
  }
};

/**
 * This host's guests: QEMU processes that run in its run directory (the
 * backend starts each in its domain's directory, with relative paths) or
 * whose arguments name it.
 */
function guestsOf(runDirMarker: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const argv = argvOf(name);
    const program = argv[0]?.slice(argv[0].lastIndexOf('/') + 1) ?? '';
    if (!program.startsWith('qemu-system')) continue;
    if (cwdOf(name).startsWith(runDirMarker) || argv.some((a) => a.includes(runDirMarker))) pids.push(Number(name));
  }
  return pids;
}

/** Nothing left to do: no daemon to hear from, no deadline, no lease held. */
function exitIfIdle(): void {
  if (!stdinOpen && sockets.size === 0 && deadline === null && !hold) {
    rmSync(socketPath, { force: true });
    process.exit(0);
  }
}

function fence(why: string): void {
  deadline = null;
  endHold();
  clearTimeout(timer);
  let killed = 0;
  for (const pid of guestsOf(marker)) {
    try {
      process.kill(pid, 'SIGKILL');
      killed++;
    } catch {
      // exited meanwhile
    }
  }
  log(`${why}, killed ${killed} guest(s)`);
  say({ fenced: killed });
  exitIfIdle();
}

/** Sleeps until the deadline (re-checked on wake-up: timers may fire early or late, the deadline is what counts). */
function schedule(): void {
  clearTimeout(timer);
  if (deadline === null) return;
  const leftMs = Number((deadline - process.hrtime.bigint()) / NS_PER_MS);
  if (leftMs <= 0) return fence('deadline passed');
  timer = setTimeout(schedule, Math.min(leftMs, 100));
}

function endHold(): void {
  hold = undefined;
  clearTimeout(holdTimer);
}

/**
 * One round of the hand-over: a keepalive to every member; the first TTL > 0
 * moves the deadline to send time + TTL − 1 s, a TTL of 0 (the lease is gone:
 * survivors may be restarting the guests) fences now. Once the grace period
 * is over no keepalive is sent: the deadline passes within TTL − 1 s.
 */
async function holdRound(): Promise<void> {
  const h = hold;
  if (!h) return;
  const sent = process.hrtime.bigint();
  if (sent >= h.until) {
    log('the grace period ended without a daemon: the lease runs out');
    endHold();
    exitIfIdle();
    return;
  }
  const intervalMs = (h.ttlS * 1000) / 5;
  const ttl = await holdKeepalive(h, Math.max(1, Math.min(intervalMs, Number(((deadline ?? sent) - sent) / NS_PER_MS))));
  if (hold !== h) return; // a daemon took over meanwhile
  if (ttl === 0) return fence('etcd says the held lease is gone');
  if (ttl !== undefined) {
    const next = sent + BigInt(ttl) * 1_000_000_000n - 1_000_000_000n;
    if (deadline !== null && next > deadline) deadline = next;
    schedule();
  }
  const tookMs = Number((process.hrtime.bigint() - sent) / NS_PER_MS);
  holdTimer = setTimeout(() => void holdRound(), Math.max(0, intervalMs - tookMs));
}

function handle(line: string): void {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  if (typeof msg !== 'object' || msg === null) return;
  if ('stop' in msg) {
    deadline = null;
    endHold();
    rmSync(socketPath, { force: true });
    process.exit(0);
  }
  if ('disarm' in msg) {
    deadline = null;
    endHold();
  } else if ('arm' in msg && typeof msg.arm === 'string' && /^\d{1,20}$/.test(msg.arm)) {
    deadline = BigInt(msg.arm);
    endHold(); // a daemon keeps the lease alive again
  } else if ('hold' in msg && deadline !== null) {
    const h = checkHold(msg.hold);
    if (!h) return log('ignored a malformed hold');
    endHold();
    hold = { ...h, until: process.hrtime.bigint() + BigInt(h.graceMs) * NS_PER_MS };
    log(`holding lease ${h.lease} for at most ${h.graceMs} ms`);
    void holdRound();
  }
  schedule();
}

/** Splits a stream into bounded lines; a line past MAX_LINE ends the stream (`onOverflow`). */
function lines(stream: NodeJS.ReadableStream, onLine: (l: string) => void, onOverflow: () => void): void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (l.length <= MAX_LINE) onLine(l);
    }
    if (buf.length > MAX_LINE) {
      buf = '';
      onOverflow();
    }
  });
}

lines(process.stdin, handle, () => log('overlong line on stdin ignored'));
process.stdin.on('end', () => {
  stdinOpen = false;
  exitIfIdle();
});
process.stdin.on('error', () => undefined);

// a later daemon adopts this fencer here: only root reaches the socket (0600, in the private ha/ directory)
rmSync(socketPath, { force: true });
const server = createServer((s) => {
  if (sockets.size >= MAX_CONNECTIONS) return void s.destroy();
  sockets.add(s);
  s.on('error', () => undefined);
  s.on('close', () => {
    sockets.delete(s);
    exitIfIdle();
  });
  lines(s, handle, () => s.destroy());
});
server.listen(socketPath, () => chmodSync(socketPath, 0o600));
server.on('error', (err) => log(`socket: ${String(err)}`));
