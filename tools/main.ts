/**
 * The main job: a Xenon host with local storage and a network, a test VM
 * booted on it, and the addresses printed. Runs until interrupted.
 *   npx tsx tools/main.ts [--data-dir DIR] [--http ADDR:PORT] [--https ADDR:PORT]
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { XenApiClient } from '../src/client/client.ts';
import { acquirePidFile } from '../src/cli/xenon/pidfile.ts';
import { defaultPlugins } from '../src/plugins.ts';
import { startServer } from '../src/server.ts';
import { testGuestCmdline, testGuestPaths } from './testguest/index.ts';

const { values } = parseArgs({
  options: {
    'data-dir': { type: 'string', default: 'data' },
    http: { type: 'string', default: '127.0.0.1:8080' },
    https: { type: 'string', default: '0.0.0.0:8443' },
  },
});
const listen = (s: string): { host: string; port: number } => ({ host: s.slice(0, s.lastIndexOf(':')), port: Number(s.slice(s.lastIndexOf(':') + 1)) });

const dataDir = resolve(values['data-dir']!);
const password = process.env.XENON_ROOT_PASSWORD;
let announced = '';
process.on('exit', acquirePidFile(dataDir));
const server = await startServer(
  {
    dataDir,
    http: listen(values.http!),
    https: listen(values.https!),
    rootPassword: password,
    logLevel: process.env.XENON_LOG_LEVEL ?? 'warn',
    announce: (line) => (announced = line),
  },
  defaultPlugins({ backend: 'qemu' }),
);

const c = new XenApiClient(server.httpUrl!);
const rootPw = password ?? /: (\S+)$/.exec(announced)?.[1];
if (!rootPw) {
  process.stdout.write('xenon: the root password was set on an earlier start; set XENON_ROOT_PASSWORD to let this script log in\n');
} else {
  await c.login('root', rootPw);
  const [pool] = await c.api.pool.get_all();
  const sr = await c.api.pool.get_default_SR(pool);
  let [vm] = await c.api.VM.get_by_name_label('xenon-demo');
  if (!vm) {
    const { kernel, initrd } = await testGuestPaths();
    const [tpl] = await c.api.VM.get_by_name_label('Xenon test guest');
    vm = await c.api.VM.clone(tpl, 'xenon-demo');
    await c.api.VM.set_is_a_template(vm, false);
    await c.api.VM.set_PV_kernel(vm, kernel);
    await c.api.VM.set_PV_ramdisk(vm, initrd);
    await c.api.VM.set_PV_args(vm, testGuestCmdline({ mode: 'stay', ip: '10.77.0.2/24' }));
    const disk = await c.api.VDI.create({ SR: sr, virtual_size: 64 * 1024 * 1024, name_label: 'xenon-demo disk', type: 'user' } as never);
    await c.api.VBD.create({ VM: vm, VDI: disk, userdevice: '0', bootable: false, mode: 'RW', type: 'Disk', empty: false } as never);
    let [net] = await c.api.network.get_by_name_label('xenon-demo network');
    net ??= await c.api.network.create({ name_label: 'xenon-demo network', name_description: 'host-internal network of the demo VM', MTU: 1500 } as never);
    await c.api.VIF.create({ VM: vm, network: net, device: '0', MAC: '', MTU: 1500 } as never);
  }
  if ((await c.api.VM.get_power_state(vm)) === 'Halted') await c.api.VM.start(vm, false, false);
  const uuid = await c.api.VM.get_uuid(vm);
  const booted = await waitForMarker(c, vm, 180_000);
  const lines = [
    '',
    'Xenon is running.',
    `  XenAPI (HTTP, loopback):  ${server.httpUrl}   (XML-RPC on /, JSON-RPC on /jsonrpc)`,
    `  XenAPI (HTTPS):           ${server.httpsUrl?.replace('0.0.0.0', hostname())}`,
    server.webConsole
      ? `  web console:              ${server.httpsUrl?.replace('0.0.0.0', hostname())}/  (log in as root)`
      : `  web console:              not built (npm run build:web); use xe or any XenAPI client`,
    `  root password:            ${password ? '(from XENON_ROOT_PASSWORD)' : rootPw}`,
    `  local storage SR:         ${await c.api.SR.get_uuid(sr)}`,
    `  test VM:                  xenon-demo (${uuid}) — ${await c.api.VM.get_power_state(vm)}${booted ? `, booted (its console printed "${booted}")` : ', not booted yet'}`,
    `  try:  ./bin/xe.mjs -s 127.0.0.1 -p ${new URL(server.httpUrl!).port} --nossl -u root -pw '${rootPw}' vm-list`,
    `        ./bin/xe.mjs ... console vm=xenon-demo      (serial console; Ctrl-] to leave)`,
    'Ctrl-C stops the toolstack; guests and their network keep running and are re-adopted on the next start.',
    `Stop everything: npx xenon stop --data-dir ${dataDir} --guests`,
    '',
  ];
  process.stdout.write(lines.join('\n'));
}

/** Waits for the test guest's ready line on its serial console (GET /console). */
async function waitForMarker(client: XenApiClient, vm: string, timeoutMs: number): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const con of await client.api.VM.get_consoles(vm as never)) {
      if ((await client.api.console.get_protocol(con)) !== 'vt100') continue;
      const res = await fetch(`${client.url.origin}/console?ref=${encodeURIComponent(con)}&session_id=${encodeURIComponent(client.session)}`);
      const line = res.ok ? /XENON-TESTGUEST-READY[^\r\n]*/.exec(await res.text())?.[0] : undefined;
      if (line) return line;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return undefined;
}

/** What outlives the toolstack (on purpose: guests keep running), and how to remove it. */
async function leftRunning(): Promise<string[]> {
  const lines: string[] = [];
  if (rootPw) {
    const vms = await c.api.VM.get_all_records().catch(() => ({}));
    for (const vm of Object.values(vms)) {
      if (!vm.is_a_template && !vm.is_control_domain && vm.power_state !== 'Halted') lines.push(`  guest ${vm.name_label} (${vm.uuid}), ${vm.power_state}`);
    }
  }
  const ovs = join(dataDir, 'run', 'ovs');
  if (existsSync(join(ovs, 'ovs-vswitchd.pid'))) lines.push(`  Open vSwitch (ovsdb-server, ovs-vswitchd; run directory ${ovs}) and the bridges of its networks`);
  return lines;
}

const stop = (): void => {
  process.removeListener('SIGINT', stop);
  leftRunning().catch(() => [] as string[]).then(async (lines) => {
    c.close();
    await server.close();
    const tail = lines.length
      ? ['xenon: the toolstack stopped; still running (re-adopted on the next start):', ...lines,
        `To stop them too: npx xenon stop --data-dir ${dataDir} --guests`]
      : ['xenon: the toolstack stopped; nothing of it keeps running.'];
    process.stdout.write(`\n${tail.join('\n')}\n`);
  }).then(() => process.exit(0), () => process.exit(1));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
