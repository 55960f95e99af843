/** Driving the test guest through the public interfaces: XenAPI records, /console. */
import http from 'node:http';
import net from 'node:net';
import type { XenApiClient, Ref } from '../../src/client/client.ts';
import { testGuestCmdline, testGuestPaths } from '../../tools/testguest/index.ts';

export const MARKER = 'XENON-TESTGUEST-READY';

/** A VM from the "Xenon test guest" template, booting the test kernel. */
export async function makeTestGuestVm(c: XenApiClient, name: string, mode: 'stay' | 'poweroff' | 'reboot' | 'panic' = 'stay', extra = ''): Promise<Ref<'VM'>> {
  const { kernel, initrd } = await testGuestPaths();
  const [tpl] = await c.api.VM.get_by_name_label('Xenon test guest');
  const rec = await c.api.VM.get_record(tpl);
  const vm = await c.api.VM.create({ ...rec, name_label: name, is_a_template: false, is_default_template: false, other_config: {} } as never);
  await c.api.VM.set_PV_kernel(vm, kernel);
  await c.api.VM.set_PV_ramdisk(vm, initrd);
  await c.api.VM.set_PV_args(vm, testGuestCmdline({ mode, extra }));
  return vm;
}

async function vt100(c: XenApiClient, vm: Ref<'VM'>): Promise<string> {
  for (const con of await c.api.VM.get_consoles(vm)) if ((await c.api.console.get_protocol(con)) === 'vt100') return con;
  throw new Error('no vt100 console');
}

/** What the guest printed on its serial console so far (GET /console). */
export async function serialText(c: XenApiClient, vm: Ref<'VM'>): Promise<string> {
  const con = await vt100(c, vm);
  return new Promise((resolve) => {
    const req = http.get({ ...c.connectTarget, path: `/console?ref=${encodeURIComponent(con)}&session_id=${encodeURIComponent(c.session)}` }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 ? body : ''));
      res.on('error', () => resolve(''));
    });
    req.on('error', () => resolve(''));
  });
}

export async function waitSerial(c: XenApiClient, vm: Ref<'VM'>, needle: string, count = 1, timeoutMs = 150_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < deadline) {
    text = await serialText(c, vm).catch(() => '');
    if (text.split(needle).length - 1 >= count) return text;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${needle} x${count}; serial tail:\n${text.slice(-1500)}`);
}

/** Types a line on the VM's serial console through HTTP CONNECT /console. */
export async function typeOnConsole(c: XenApiClient, vm: Ref<'VM'>, line: string): Promise<void> {
  const con = await vt100(c, vm);
  await new Promise<void>((resolve, reject) => {
    const target = c.connectTarget;
    const s = net.createConnection('socketPath' in target ? { path: target.socketPath } : target, () => {
      s.write(`CONNECT /console?ref=${encodeURIComponent(con)}&session_id=${encodeURIComponent(c.session)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    });
    let head = '';
    s.on('data', (d: Buffer) => {
      if (head.includes('\r\n\r\n')) return;
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      if (!head.startsWith('HTTP/1.1 200')) return reject(new Error(head));
      s.write(`${line}\n`, () => setTimeout(() => { s.destroy(); resolve(); }, 200));
    });
    s.on('error', reject);
  });
}

export async function waitPowerState(c: XenApiClient, vm: Ref<'VM'>, state: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await c.api.VM.get_power_state(vm);
    if (now === state) return;
    if (Date.now() > deadline) throw new Error(`VM stayed ${now}, expected ${state}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
