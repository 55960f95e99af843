/**
 * A host a newcomer can run and stop: `xenon stop` finds the daemon by its
 * pid file; `--guests` also shuts its guests down and removes its bridges,
 * taps and Open vSwitch daemons; a second data directory cannot network in
 * the same namespace and is told what to do. All inside namespaces made here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { XenApiClient } from '../../src/client/client.ts';
import { spawnDaemon, type Daemon } from '../helpers/daemon.ts';
import { makeTestGuestVm, MARKER, waitSerial } from '../helpers/guest.ts';
import { must, sh } from '../network/helpers.ts';

const XENON = fileURLToPath(new URL('../../src/cli/xenon.ts', import.meta.url));

/** Runs `xenon ARGS` inside the namespace; resolves with its exit code and output. */
function xenon(ns: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', XENON, ...args], { timeout: 120_000, env: { ...process.env, XENON_ROOT_PASSWORD: 'xenon-test-root' } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, out: String(stdout) + String(stderr) });
    });
  });
}

const alive = (pid: number): boolean => existsSync(`/proc/${pid}`) && !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
const pidIn = (file: string): number => Number(readFileSync(file, 'utf8').trim());

async function withNamespace(prefix: string, body: (ns: string, dirs: string[]) => Promise<void>): Promise<void> {
  const ns = `${prefix}-${randomBytes(3).toString('hex')}`;
  const dirs = [mkdtempSync(join(tmpdir(), `${prefix}-a-`)), mkdtempSync(join(tmpdir(), `${prefix}-b-`))];
  await must('ip', ['netns', 'add', ns]);
  try {
    await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await body(ns, dirs);
  } finally {
    for (const d of dirs) await xenon(ns, ['stop', '--data-dir', d, '--guests', '--timeout', '5']);
    await sh('ip', ['netns', 'del', ns]);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
}

test('a second data directory in the namespace is refused with what to do; xenon stop lets it start', { timeout: 180_000 }, async () => {
  await withNamespace('xenon-stop', async (ns, [a, b]) => {
    const args = ['--backend', 'sim', '--network', 'ovs'];
    let first: Daemon | undefined = await spawnDaemon(a, { netns: ns, socketPath: join(a, 'api.sock'), args });
    try {
      const vswitchd = pidIn(join(a, 'run', 'ovs', 'ovs-vswitchd.pid'));
      // the same data directory twice: the pid file says who has it
      const again = await xenon(ns, ['server', '--data-dir', a, '--http', join(a, 'api2.sock'), ...args]);
      assert.equal(again.code, 1);
      assert.match(again.out, new RegExp(`already running on ${a}.*xenon stop --data-dir ${a}`));

      // another data directory in the same namespace: refused before it touches the network
      const second = await xenon(ns, ['server', '--data-dir', b, '--http', join(b, 'api.sock'), ...args]);
      assert.equal(second.code, 1, second.out);
      assert.match(second.out, new RegExp(`another Xenon data directory, ${a}, has networking in this network namespace`));
      assert.match(second.out, new RegExp(`ovs-vswitchd \\(pid ${vswitchd}`));
      assert.match(second.out, new RegExp(`xenon stop --data-dir ${a} --guests`));
      assert.ok(!existsSync(join(b, 'run', 'ovs', 'ovs-vswitchd.pid')), 'no Open vSwitch was started for the refused one');
      assert.ok(alive(vswitchd), 'the first one keeps its switch');

      // plain stop: the daemon goes, its switch stays (guests would keep their network)
      const stop = await xenon(ns, ['stop', '--data-dir', a]);
      assert.equal(stop.code, 0, stop.out);
      assert.match(stop.out, new RegExp(`stopped the daemon \\(pid ${first.proc.pid}\\)`));
      assert.match(stop.out, /keep running \(stop them too with --guests\)/);
      assert.equal(await first.exited, 0);
      first = undefined;
      assert.ok(!existsSync(join(a, 'xenon.pid')));
      assert.ok(alive(vswitchd));
      assert.match((await xenon(ns, ['server', '--data-dir', b, '--http', join(b, 'api.sock'), ...args])).out, /ovs-vswitchd/);

      // --guests: the switch goes too, and the namespace is free
      const all = await xenon(ns, ['stop', '--data-dir', a, '--guests']);
      assert.equal(all.code, 0, all.out);
      assert.match(all.out, /no daemon is running/);
      assert.match(all.out, /stopped its Open vSwitch daemons/);
      assert.ok(!alive(vswitchd));
      const d = await spawnDaemon(b, { netns: ns, socketPath: join(b, 'api.sock'), args });
      d.proc.kill('SIGTERM');
      assert.equal(await d.exited, 0);
    } finally {
      first?.proc.kill('SIGTERM');
      await first?.exited;
    }
  });
});

test('xenon stop --guests shuts down a running guest and removes its tap, bridge and switch', { timeout: 300_000 }, async () => {
  await withNamespace('xenon-stopg', async (ns, [dir]) => {
    const socketPath = join(dir, 'api.sock');
    const d = await spawnDaemon(dir, { netns: ns, socketPath, args: ['--backend', 'qemu', '--accel', 'tcg', '--network', 'ovs'] });
    const c = new XenApiClient('http://localhost', { socketPath });
    try {
      await c.login('root', 'xenon-test-root');
      const vm = await makeTestGuestVm(c, 'stop-me');
      const net = await c.api.network.create({ name_label: 'stop-net', name_description: '', MTU: 1500 } as never);
      const bridge = await c.api.network.get_bridge(net);
      await c.api.VIF.create({ VM: vm, network: net, device: '0', MAC: '', MTU: 1500 } as never);
      await c.api.VM.start(vm, false, false);
      await waitSerial(c, vm, MARKER);
      const qemu = await c.api.VM.get_domid(vm);
      const links = async (): Promise<string> => (await must('ip', ['-n', ns, '-o', 'link', 'show'])).toString();
      assert.match(await links(), new RegExp(`: ${bridge}[:@]`));
      c.close();

      const r = await xenon(ns, ['stop', '--data-dir', dir, '--guests', '--timeout', '60']);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /stopped the daemon/);
      assert.match(r.out, /shut down guest stop-me \([0-9a-f-]{36}\) cleanly/);
      assert.match(r.out, /stopped its Open vSwitch daemons/);
      assert.equal(await d.exited, 0);
      assert.ok(!alive(Number(qemu)), 'the guest is gone');
      const left = await links();
      assert.doesNotMatch(left, new RegExp(`: ${bridge}[:@]`), 'its bridge is gone');
      assert.doesNotMatch(left, /xenon-tap/, 'its taps are gone');
      assert.doesNotMatch(left, /ovs-netdev/, 'the switch is gone');
    } finally {
      c.close();
      d.proc.kill('SIGTERM');
      await d.exited;
    }
  });
});
