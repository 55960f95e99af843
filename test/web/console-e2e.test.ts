/**
 * The web console end to end, in headless Chromium (playwright-core, Debian's
 * /usr/bin/chromium) against a daemon with the QEMU backend and the test
 * guest: log in, create a VM with the wizard, start it, see the graphical
 * console draw the guest's boot, type on the serial console, see the CPU
 * graph, snapshot, shut down, delete. Each step's screenshot is kept in
 * test-artifacts/web/. Also the console WebSocket's own checks (session,
 * role, origin) and its bridge to QEMU's VNC, without a browser.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import WebSocket from 'ws';
import type { Ref } from '../../src/client/client.ts';
import { defaultPlugins } from '../../src/plugins.ts';
import { DEFAULT_WEB_DIR } from '../../src/web/static.ts';
import { testGuestPaths } from '../../tools/testguest/index.ts';
import { loginAs } from '../access/users.ts';
import { MARKER, serialText, waitSerial } from '../helpers/guest.ts';
import { ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';

const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/web/', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';

let t: TestServer;
let browser: Browser;
let page: Page;
let shot = 0;

async function screenshot(name: string): Promise<void> {
  await page.screenshot({ path: `${ARTIFACTS}${String(++shot).padStart(2, '0')}-${name}.png` });
}

before(async () => {
  assert.ok(existsSync(`${DEFAULT_WEB_DIR}index.html`), 'the console is built (npm run build:web; scripts/setup.sh does it)');
  assert.ok(existsSync(CHROMIUM), 'Debian chromium is installed (scripts/setup.sh)');
  mkdirSync(ARTIFACTS, { recursive: true });
  t = await startTestServer({ plugins: defaultPlugins({ backend: 'qemu', accel: 'tcg', network: 'none' }) });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on('pageerror', (e) => console.error('page error:', e.message));
});

after(async () => {
  await browser?.close();
  if (t) {
    for (const vm of await t.client.api.VM.get_all()) {
      const rec = await t.client.api.VM.get_record(vm);
      if (!rec.is_control_domain && rec.power_state !== 'Halted') await t.client.api.VM.hard_shutdown(vm).catch(() => undefined);
    }
    await t.close();
  }
});

/** The VM the wizard made (by name), through the API. */
async function vmNamed(name: string): Promise<Ref<'VM'>> {
  const [vm] = await t.client.api.VM.get_by_name_label(name);
  assert.ok(vm, `VM ${name} exists`);
  return vm;
}

/** Fraction of the VNC canvas that is not background: the guest's text on screen. */
function litFraction(p: Page): Promise<{ width: number; height: number; lit: number }> {
  return p.evaluate(() => {
    const canvas = document.querySelector<HTMLCanvasElement>('[data-testid=vnc-screen] canvas');
    if (!canvas || canvas.width === 0) return { width: 0, height: 0, lit: 0 };
    const data = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 120) lit++;
    return { width: canvas.width, height: canvas.height, lit: lit / (data.length / 4) };
  });
}

test('log in, create a VM with the wizard, console, serial, graph, snapshot, shut down, delete', { timeout: 420_000 }, async () => {
  const { kernel, initrd } = await testGuestPaths();
  await page.goto(t.url);
  await page.getByLabel('Password').fill(ROOT_PASSWORD);
  await screenshot('login');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText('Local storage').first().waitFor();
  await page.getByText('● live').waitFor();
  await screenshot('tree');

  // the wizard: the test guest's template, booted from its kernel, the kernel's messages on the screen too
  await page.getByRole('link', { name: 'New VM' }).click();
  await page.getByLabel('Template', { exact: true }).selectOption({ label: 'Xenon test guest' });
  await page.getByLabel('Name', { exact: true }).fill('web-e2e');
  await page.getByLabel('Memory (MiB)').fill('192');
  await page.getByRole('button', { name: 'Add a disk' }).click();
  await page.getByLabel('Disk 0 size (GiB)').fill('0.0625');
  await page.getByLabel('From a kernel on the host').check();
  await page.getByLabel('Kernel', { exact: true }).fill(kernel);
  await page.getByLabel('Initrd').fill(initrd);
  await page.getByLabel('Kernel arguments').fill('console=tty0 console=ttyS0 panic=0 mitigations=off xenon.mode=stay');
  await screenshot('wizard');
  await page.getByRole('button', { name: 'Create VM' }).click();

  // it starts and the page shows its graphical console
  await page.locator('[data-testid=vnc-screen] canvas').waitFor({ timeout: 60_000 });
  await page.locator('.console-status.ok').waitFor({ timeout: 30_000 });
  const vm = await vmNamed('web-e2e');
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Running');
  assert.equal(await t.client.api.VM.get_memory_static_max(vm), 192 * 1024 * 1024);
  const [vbd] = await t.client.api.VM.get_VBDs(vm);
  const disk = await t.client.api.VBD.get_VDI(vbd);
  assert.equal(await t.client.api.VDI.get_virtual_size(disk), 64 * 1024 * 1024, 'the disk the wizard planned, on the SR');
  await waitSerial(t.client, vm, MARKER);
  let screen = await litFraction(page);
  for (let i = 0; i < 50 && screen.lit < 0.01; i++) {
    await page.waitForTimeout(200);
    screen = await litFraction(page);
  }
  assert.ok(screen.width >= 640 && screen.height >= 400, `a VGA-sized screen: ${screen.width}x${screen.height}`);
  assert.ok(screen.lit >= 0.01, `the guest's boot messages are on the screen (${(screen.lit * 100).toFixed(2)}% lit)`);
  await screenshot('graphical-console');

  // the serial console: what the guest printed, and what is typed reaches it
  await page.getByLabel('Serial').check();
  await page.locator('[data-testid=serial-terminal] .xterm-rows').getByText(MARKER).waitFor({ timeout: 30_000 });
  await page.locator('[data-testid=serial-terminal] .xterm-helper-textarea').focus();
  await page.keyboard.type('echo typed-in-the-browser\n');
  await waitSerial(t.client, vm, 'XENON-ECHO typed-in-the-browser', 1, 30_000);
  await page.locator('[data-testid=serial-terminal] .xterm-rows').getByText('XENON-ECHO typed-in-the-browser').waitFor();
  await screenshot('serial-console');

  // the CPU graph from /rrd_updates
  await page.getByRole('tab', { name: 'Performance' }).click();
  await page.locator('[data-testid=chart-cpu] canvas').waitFor({ timeout: 60_000 });
  await page.locator('[data-testid=chart-cpu] .u-legend').getByText('cpu0').waitFor();
  await screenshot('performance');

  // a snapshot, listed live on its tab
  await page.getByRole('button', { name: 'Take snapshot' }).first().click();
  await page.getByRole('tab', { name: 'Snapshots' }).click();
  await page.getByRole('tabpanel').getByRole('link', { name: /web-e2e snapshot/ }).waitFor({ timeout: 60_000 });
  assert.equal((await t.client.api.VM.get_snapshots(vm)).length, 1);
  await screenshot('snapshot');

  // shut down: clean once the guest agent has answered (allowed_operations says so), else forced
  const clean = page.getByRole('button', { name: 'Shut down', exact: true });
  await page.waitForFunction(() => [...document.querySelectorAll('button')].some((b) => b.textContent === 'Shut down' && !b.disabled), undefined, { timeout: 30_000 }).catch(() => undefined);
  if (await clean.isEnabled()) await clean.click();
  else await page.getByRole('button', { name: 'Force shut down' }).click();
  await page.locator('h1 [aria-label=Halted]').waitFor({ timeout: 90_000 });
  assert.equal(await t.client.api.VM.get_power_state(vm), 'Halted');
  await screenshot('halted');

  // delete it (and its disks)
  await page.getByRole('button', { name: 'Delete' }).first().click();
  await page.getByRole('dialog', { name: 'Delete the VM' }).getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('heading', { name: /Pool|^$/ }).first().waitFor();
  await page.waitForFunction(() => !document.querySelector('nav')?.textContent?.includes('web-e2e'), undefined, { timeout: 30_000 });
  assert.equal((await t.client.api.VM.get_by_name_label('web-e2e')).length, 0);
  for (let i = 0; i < 100 && (await t.client.api.VDI.get_all()).includes(disk); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(!(await t.client.api.VDI.get_all()).includes(disk), 'its disk went with it');
  const left = await t.client.api.VM.get_all_records();
  assert.ok(!Object.values(left).some((r) => r.is_a_snapshot && r.name_label.startsWith('web-e2e')), 'and its snapshot');
  await screenshot('deleted');
});

test('a slow or broken connection is said in words, never a blank page', { timeout: 90_000 }, async () => {
  const context = await browser.newContext();
  try {
    // the app's script never arrives: the page says so
    const p = await context.newPage();
    await p.route('**/assets/**', (r) => r.abort());
    await p.goto(t.url);
    await p.getByText('the connection to the server may be slow or broken').waitFor({ state: 'visible', timeout: 20_000 });
    await p.screenshot({ path: `${ARTIFACTS}broken-script.png` });
    await p.unroute('**/assets/**');

    // logged in, then the server cannot be reached: a banner, then live again
    await p.goto(t.url);
    await p.getByLabel('Password').fill(ROOT_PASSWORD);
    await p.getByRole('button', { name: 'Log in' }).click();
    await p.getByText('● live').waitFor();
    await p.route('**/jsonrpc', (r) => r.abort());
    const [pool] = await t.client.api.pool.get_all();
    await t.client.api.pool.set_name_description(pool, 'wakes the event streams'); // the next event.from fails
    await p.getByRole('alert').getByText(/Lost the connection to the server/).waitFor({ timeout: 20_000 });
    await p.screenshot({ path: `${ARTIFACTS}broken-connection.png` });
    await p.unroute('**/jsonrpc');
    await p.getByText('● live').waitFor({ timeout: 30_000 });
    assert.equal(await p.getByText(/Lost the connection/).count(), 0, 'the banner goes once the server answers again');
  } finally {
    await context.close();
  }
});

/** Opens the console WebSocket as a browser would; resolves with the first bytes, or the HTTP refusal. */
function openConsole(url: string, headers: Record<string, string> = {}): Promise<{ ok: true; first: Buffer } | { ok: false; status: number }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    ws.on('unexpected-response', (_req, res) => {
      resolve({ ok: false, status: res.statusCode ?? 0 });
      ws.terminate();
    });
    ws.on('message', (data: Buffer) => {
      resolve({ ok: true, first: data });
      ws.close();
    });
    ws.on('error', () => resolve({ ok: false, status: 0 }));
  });
}

test('the console WebSocket checks session, role and origin, then carries RFB from QEMU', { timeout: 180_000 }, async () => {
  const c = t.client;
  const { kernel, initrd } = await testGuestPaths();
  const [tpl] = await c.api.VM.get_by_name_label('Xenon test guest');
  const vm = await c.api.VM.clone(tpl, 'ws-checks');
  await c.api.VM.set_is_a_template(vm, false);
  await c.api.VM.set_PV_kernel(vm, kernel);
  await c.api.VM.set_PV_ramdisk(vm, initrd);
  await c.api.VM.set_PV_args(vm, 'console=ttyS0 xenon.mode=stay');
  await c.api.VM.start(vm, false, false);
  try {
    const consoles = await c.api.VM.get_consoles(vm);
    const rfb = (await Promise.all(consoles.map(async (r) => [r, await c.api.console.get_protocol(r)] as const))).find(([, p]) => p === 'rfb')![0];
    const ws = (session: string) => `${t.url.replace('http', 'ws')}/console?ref=${encodeURIComponent(rfb)}&session_id=${encodeURIComponent(session)}`;
    const host = new URL(t.url).host;

    const good = await openConsole(ws(c.session), { Origin: `http://${host}` });
    assert.ok(good.ok, 'root on the same origin gets the console');
    assert.match(good.first.toString('latin1'), /^RFB 003\.00\d\n/, "QEMU's VNC greeting comes through");

    assert.deepEqual(await openConsole(ws('OpaqueRef:not-a-session')), { ok: false, status: 401 });
    assert.deepEqual(await openConsole(ws(c.session), { Origin: 'http://evil.example' }), { ok: false, status: 403 }, 'another origin is refused');
    const users = await loginAs(t, ['read-only', 'vm-operator']);
    assert.deepEqual(await openConsole(ws(users.get('read-only')!.session)), { ok: false, status: 403 }, 'read-only may not use the console');
    assert.ok((await openConsole(ws(users.get('vm-operator')!.session))).ok, 'vm-operator may');
    for (const u of users.values()) await u.logout();

    // the serial console over the same path: the log's tail first
    await waitSerial(c, vm, MARKER);
    const vt100 = (await Promise.all(consoles.map(async (r) => [r, await c.api.console.get_protocol(r)] as const))).find(([, p]) => p === 'vt100')![0];
    const serial = await openConsole(`${t.url.replace('http', 'ws')}/console?ref=${encodeURIComponent(vt100)}&session_id=${encodeURIComponent(c.session)}`);
    assert.ok(serial.ok && serial.first.toString().includes(MARKER), 'the serial log so far comes first');
    assert.ok((await serialText(c, vm)).includes(MARKER));
  } finally {
    await c.api.VM.hard_shutdown(vm).catch(() => undefined);
  }
});
