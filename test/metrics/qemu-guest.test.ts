/**
 * A real guest (the test guest under QEMU, TCG) seen through /rrd_updates at
 * xapi's 5-second step: a vCPU burning shows near 1, idle near 0; its disk's
 * read and write rates and request counts move when it reads and writes; its
 * VIF's rates move when it pings. The VIF is a tap of the test's own, up,
 * without address and attached to nothing: what the guest sends ends there.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Ref } from '../../src/client/client.ts';
import type { Plugin } from '../../src/server.ts';
import { metricsPlugin, storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { makeTestGuestVm, MARKER, typeOnConsole, waitSerial } from '../helpers/guest.ts';

const TAP = `xm${randomBytes(4).toString('hex')}`;
let t: TestServer;
let vm: Ref<'VM'>;
let uuid: string;

/** VIFs on the test's tap (no network subsystem). */
const tapNics: Plugin = {
  name: 'tap-nics',
  start(services) {
    services.nics = { plug: async () => ({ tap: TAP }), unplug: async () => undefined };
  },
};

before(async () => {
  execFileSync('ip', ['tuntap', 'add', 'dev', TAP, 'mode', 'tap']);
  execFileSync('ip', ['link', 'set', TAP, 'up']);
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), tapNics, xenopsPlugin({ backend: 'qemu', accel: 'tcg', metricsIntervalMs: 3_600_000 }), metricsPlugin()] });
  const c = t.client;
  const [pool] = await c.api.pool.get_all();
  const sr = await c.api.pool.get_default_SR(pool!);
  vm = await makeTestGuestVm(c, 'metrics-guest', 'stay', 'xenon.ip=10.254.77.2/24');
  const vdi = await c.api.VDI.create({ SR: sr, virtual_size: 32 * 1024 * 1024, name_label: 'metrics-data', type: 'user' } as never);
  await c.api.VBD.create({ VM: vm, VDI: vdi, userdevice: '0', bootable: false, mode: 'RW', type: 'Disk', empty: false } as never);
  const net = await c.api.network.create({ name_label: 'tap', name_description: '', MTU: 1500, other_config: {}, tags: [] } as never);
  await c.api.VIF.create({ VM: vm, network: net, device: '0', MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [] } as never);
  await c.api.VM.start(vm, false, false);
  uuid = await c.api.VM.get_uuid(vm);
  await waitSerial(c, vm, MARKER);
});

after(async () => {
  await t?.client.api.VM.hard_shutdown(vm).catch(() => undefined);
  await t?.close();
  try {
    execFileSync('ip', ['link', 'del', TAP]);
  } catch { /* never made */ }
});

type Series = Record<string, number[]>;

/** The VM's AVERAGE series over the last `seconds`, oldest first, NaN where unknown. */
async function series(seconds: number): Promise<Series> {
  const res = await fetch(`${t.url}/rrd_updates?start=-${seconds}&cf=AVERAGE&interval=5&vm_uuid=${uuid}&json=true&session_id=${encodeURIComponent(t.client.session)}`);
  assert.equal(res.status, 200);
  const doc = (await res.json()) as { meta: { step: number; legend: string[] }; data: { t: number; values: (number | string)[] }[] };
  assert.equal(doc.meta.step, 5);
  const out: Series = {};
  doc.meta.legend.forEach((entry, i) => {
    const name = entry.split(':').at(-1)!;
    out[name] = [...doc.data].reverse().map((row) => Number(row.values[i]));
  });
  return out;
}

const known = (xs: readonly number[]): number[] => xs.filter((x) => !Number.isNaN(x));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function command(line: string, done: string): Promise<void> {
  const before = (await waitSerial(t.client, vm, MARKER)).split(done).length - 1;
  await typeOnConsole(t.client, vm, line);
  await waitSerial(t.client, vm, done, before + 1);
}

/** Waits (up to `timeoutMs`) until the last two known rows of cpu0 satisfy `ok`; returns them. */
async function cpuSettles(ok: (v: number) => boolean, timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = known((await series(30)).cpu0 ?? []).slice(-2);
    if (last.length === 2 && last.every(ok)) return last;
    if (Date.now() > deadline) throw new Error(`vCPU rows ${last.join()} after ${timeoutMs} ms`);
    await sleep(2500);
  }
}

test('vCPU near 1 while the guest burns, near 0 idle; disk and network rates move', { timeout: 400_000 }, async () => {
  // idle once booted (TCG boots slowly on a busy host)
  await cpuSettles((v) => v < 0.2, 90_000);
  await typeOnConsole(t.client, vm, 'sh ( while :; do :; done ) & BURN=$!');
  const busy = await cpuSettles((v) => v > 0.8, 60_000);
  assert.ok(busy.every((v) => v <= 1), `a fraction: ${busy.join()}`);
  await command('sh kill $BURN', 'XENON-DONE sh');
  await cpuSettles((v) => v < 0.2, 60_000);

  // written through, then read back past the page cache
  await command('sh dd if=/dev/zero of=/dev/vda bs=64k count=256 conv=fsync 2>/dev/null; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null bs=64k count=256 2>/dev/null', 'XENON-DONE sh');
  await command('ping 10.254.77.1', 'XENON-DONE ping');
  await sleep(11_000);
  const s = await series(60);
  const peak = (name: string): number => Math.max(0, ...known(s[name] ?? []));
  assert.ok(peak('vbd_xvda_write') > 100_000, `write B/s ${peak('vbd_xvda_write')}`);
  assert.ok(peak('vbd_xvda_read') > 100_000, `read B/s ${peak('vbd_xvda_read')}`);
  assert.ok(peak('vbd_xvda_iops_write') > 0 && peak('vbd_xvda_iops_read') > 0, 'requests per second');
  assert.ok(peak('vif_0_tx') > 0, `the guest's pings and ARP requests leave its VIF: ${s.vif_0_tx?.join()}`);
  assert.ok(peak('memory') > 0);
  assert.ok(await t.client.api.VM.query_data_source(vm, 'memory') > 0);
});
