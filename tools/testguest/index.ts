import { buildTestGuest } from './build.ts';

export { buildTestGuest, INIT_SCRIPT, CACHE_DIR } from './build.ts';

/** Marker printed on ttyS0 once the guest is up. */
export const READY_MARKER = 'XENON-TESTGUEST-READY';

/** Recommended kernel command line (add xenon.* parameters after it). */
export const BASE_CMDLINE = 'console=ttyS0 panic=0 loglevel=4 mitigations=off';

let pending: Promise<{ kernel: string; initrd: string }> | undefined;

/** Paths of the test guest kernel and initramfs; builds them when missing. */
export function testGuestPaths(): Promise<{ kernel: string; initrd: string }> {
  pending ??= buildTestGuest().then((m) => ({ kernel: m.kernel, initrd: m.initrd }));
  return pending;
}

/** A kernel command line for the test guest. */
export function testGuestCmdline(params: { mode?: 'poweroff' | 'reboot' | 'panic' | 'stay'; ip?: string; ping?: string; countdev?: string; extra?: string } = {}): string {
  const parts = [BASE_CMDLINE, `xenon.mode=${params.mode ?? 'stay'}`];
  if (params.ip) parts.push(`xenon.ip=${params.ip}`);
  if (params.ping) parts.push(`xenon.ping=${params.ping}`);
  if (params.countdev) parts.push(`xenon.countdev=${params.countdev}`);
  if (params.extra) parts.push(params.extra);
  return parts.join(' ');
}

/** Count occurrences of `needle` in a file (0 when missing). */
export async function countInFile(file: string, needle: string | RegExp): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  let text = '';
  try { text = await readFile(file, 'utf8'); } catch { return 0; }
  if (typeof needle === 'string') return text.split(needle).length - 1;
  return (text.match(new RegExp(needle.source, needle.flags.includes('g') ? needle.flags : needle.flags + 'g')) ?? []).length;
}

/**
 * Wait until `file` contains at least `count` occurrences of `needle`
 * (polls every 10 ms). Returns the file text. Rejects after timeoutMs.
 */
export async function waitForText(file: string, needle: string | RegExp, opts: { count?: number; timeoutMs?: number; intervalMs?: number } = {}): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const count = opts.count ?? 1;
  const deadline = Date.now() + (opts.timeoutMs ?? 60000);
  for (;;) {
    let text = '';
    try { text = await readFile(file, 'utf8'); } catch { /* not yet */ }
    const n = typeof needle === 'string' ? text.split(needle).length - 1
      : (text.match(new RegExp(needle.source, needle.flags.includes('g') ? needle.flags : needle.flags + 'g')) ?? []).length;
    if (n >= count) return text;
    if (Date.now() > deadline) throw new Error(`timeout waiting for ${String(needle)} x${count} in ${file}; tail:\n${text.slice(-1500)}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 10));
  }
}

/** Type a line on a serial console exposed as a unix socket (QEMU chardev server). */
export async function typeOnSerial(socketPath: string, line: string): Promise<void> {
  const net = await import('node:net');
  await new Promise<void>((resolve, reject) => {
    const s = net.createConnection({ path: socketPath }, () => {
      s.end(line.endsWith('\n') ? line : line + '\n', () => { setTimeout(() => { s.destroy(); resolve(); }, 50); });
    });
    s.on('data', () => {});
    s.on('error', reject);
  });
}
