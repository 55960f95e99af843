/**
 * The fencer: a small process of its own, so that a hung or dead daemon is
 * fenced too. The daemon sends it, on stdin, one JSON line per acknowledged
 * keepalive: `{"arm":"<deadline ns>"}` (CLOCK_MONOTONIC, which every process
 * of the machine shares), or `{"disarm":true}`. When the clock passes the
 * deadline it SIGKILLs this host's guests — every QEMU whose command line
 * names the host's run directory — tells the daemon `{"fenced":N}` on stdout,
 * and disarms. When stdin closes (the daemon is gone) it still fences at the
 * deadline it holds, then exits; disarmed, it exits at once.
 *
 * Run as `node --import tsx src/ha/fencer.ts <run-dir marker>`; it imports only
 * node's own modules.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createInterface } from 'node:readline';

const marker = process.argv[2];
if (!marker || !marker.startsWith('/') || !marker.endsWith('/')) {
  process.stderr.write('fencer: usage: fencer.ts <absolute run directory ending in />\n');
  process.exit(2);
}

// the daemon may be gone: a closed pipe must not stop the fencer
process.stdout.on('error', () => undefined);

let deadline: bigint | null = null;
let timer: NodeJS.Timeout | undefined;
let inputClosed = false;

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

function fence(): void {
  deadline = null;
  let killed = 0;
  for (const pid of guestsOf(marker)) {
    try {
      process.kill(pid, 'SIGKILL');
      killed++;
    } catch {
      // exited meanwhile
    }
  }
  process.stderr.write(`fencer: deadline passed, killed ${killed} guest(s)\n`);
  process.stdout.write(`${JSON.stringify({ fenced: killed })}\n`);
  if (inputClosed) process.exit(0);
}

/** Sleeps until the deadline (re-checked on wake-up: timers may fire early or late, the deadline is what counts). */
function schedule(): void {
  clearTimeout(timer);
  if (deadline === null) return;
  const leftMs = Number((deadline - process.hrtime.bigint()) / 1_000_000n);
  if (leftMs <= 0) return fence();
  timer = setTimeout(schedule, Math.min(leftMs, 100));
}

const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  if (typeof msg !== 'object' || msg === null) return;
  if ('disarm' in msg) deadline = null;
  else if ('arm' in msg && typeof msg.arm === 'string' && /^\d{1,20}$/.test(msg.arm)) deadline = BigInt(msg.arm);
  schedule();
});
input.on('close', () => {
  inputClosed = true;
  if (deadline === null) process.exit(0);
});
