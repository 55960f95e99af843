/**
 * Web console page load for a pool of 1,000 VMs (simulator): headless
 * Chromium (Debian's, through playwright-core) against an in-process daemon.
 * Figures, each the median of the runs:
 *   - login page: navigation until the login form can be typed into (cold cache);
 *   - login to tree: "Log in" clicked until the tree lists every VM, live;
 *   - reload to interactive: a reload of a logged-in console (the session kept
 *     by the tab) until the tree lists every VM and the search answers;
 *   - search: typing a VM's name until the tree shows only it.
 * This machine is shared (the load average is printed): wall times grow with
 * the load, so the CPU time of the reload is printed too — the page's main
 * thread (Chromium's TaskDuration) and this process (the daemon, in-process).
 *
 * Run: npx tsx bench/web/run.ts [--vms N] [--running N] [--runs N]
 */
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { chromium, type Page } from 'playwright-core';
import { XenApiClient } from '../../src/client/client.ts';
import { defaultPlugins } from '../../src/plugins.ts';
import { startServer } from '../../src/server.ts';
import { DEFAULT_WEB_DIR } from '../../src/web/static.ts';

const argv = process.argv.slice(2);
const opt = (name: string, def: number): number => { const i = argv.indexOf(name); return i >= 0 ? Number(argv[i + 1]) : def; };
const VMS = opt('--vms', 1000);
const RUNNING = opt('--running', 500);
const RUNS = opt('--runs', 5);
const PASSWORD = 'bench-web';

if (!existsSync(join(DEFAULT_WEB_DIR, 'index.html'))) throw new Error('build the console first: npm run build:web');
const dataDir = mkdtempSync(join(tmpdir(), 'xenon-bench-web-'));
const server = await startServer({ dataDir, http: { host: '127.0.0.1', port: 0 }, rootPassword: PASSWORD, logger: pino({ level: 'silent' }), synchronous: 'OFF' },
  defaultPlugins({ backend: 'sim', network: 'none' }));
const url = server.httpUrl!;
const c = new XenApiClient(url);
await c.login('root', PASSWORD);

const made = Date.now();
const [tpl] = await c.api.VM.get_by_name_label('Xenon test guest');
const rec = await c.api.VM.get_record(tpl);
const MiB16 = 16 * 1024 * 1024; // small, so that the simulated host has room for the running ones
const vms = [];
for (let i = 0; i < VMS; i++) {
  vms.push(await c.api.VM.create({ ...rec, name_label: `vm-${String(i).padStart(4, '0')}`, is_a_template: false,
    memory_static_max: MiB16, memory_dynamic_max: MiB16, memory_dynamic_min: MiB16, memory_static_min: MiB16, is_default_template: false, other_config: {} } as never));
}
for (const vm of vms.slice(0, RUNNING)) await c.api.VM.start(vm, false, false);
process.stdout.write(`bench/web: ${VMS} VMs (${RUNNING} running) made in ${((Date.now() - made) / 1000).toFixed(1)} s\n`);

/** Every VM of the pool is in the tree (templates have no power icon). */
const treeComplete = (p: Page, n: number) =>
  p.waitForFunction((want) => document.querySelectorAll('nav a[href^="#/VM/"] .power').length >= want && document.body.textContent!.includes('● live'), n, { timeout: 60_000, polling: 'raf' });

async function searchTime(p: Page): Promise<number> {
  const t0 = performance.now();
  await p.getByLabel('Search the resource tree').fill('vm-0777');
  await p.waitForFunction(() => document.querySelectorAll('nav a[href^="#/VM/"] .power').length === 1, undefined, { timeout: 30_000, polling: 'raf' });
  const t = performance.now() - t0;
  await p.getByLabel('Search the resource tree').fill('');
  return t;
}

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const runs: { loginPage: number; loginToTree: number; reload: number; search: number; pageCpu: number; daemonCpu: number }[] = [];

/** Seconds the page's main thread has spent in tasks (scripts, layout, paint) since Performance.enable. */
async function mainThread(p: Page): Promise<() => Promise<number>> {
  const cdp = await p.context().newCDPSession(p);
  await cdp.send('Performance.enable', { timeDomain: 'threadTicks' });
  return async () => (await cdp.send('Performance.getMetrics')).metrics.find((m) => m.name === 'TaskDuration')?.value ?? 0;
}
const cpuMs = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1000;
try {
  for (let r = 0; r < RUNS; r++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } }); // a cold cache each run
    const page = await context.newPage();
    const t0 = performance.now();
    await page.goto(url);
    await page.getByLabel('Password').waitFor();
    const loginPage = performance.now() - t0;
    await page.getByLabel('Password').fill(PASSWORD);
    const t1 = performance.now();
    await page.getByRole('button', { name: 'Log in' }).click();
    await treeComplete(page, VMS);
    const loginToTree = performance.now() - t1;
    const taskSeconds = await mainThread(page);
    const before = await taskSeconds();
    const t2 = performance.now();
    const daemon0 = process.cpuUsage();
    await page.reload();
    await treeComplete(page, VMS);
    await page.getByLabel('Search the resource tree').waitFor();
    const reload = performance.now() - t2;
    const daemonCpu = cpuMs(process.cpuUsage(daemon0));
    const after = await taskSeconds();
    // a new document may restart the count
    const pageCpu = (after >= before ? after - before : after) * 1000;
    const search = await searchTime(page);
    runs.push({ loginPage, loginToTree, reload, search, pageCpu, daemonCpu });
    process.stdout.write(`run ${r + 1}: login page ${loginPage.toFixed(0)} ms, login to tree ${loginToTree.toFixed(0)} ms, reload to interactive ${reload.toFixed(0)} ms (page main thread ${pageCpu.toFixed(0)} ms, daemon ${daemonCpu.toFixed(0)} ms CPU), search ${search.toFixed(0)} ms, load average ${loadavg()[0].toFixed(1)}\n`);
    await context.close();
  }
} finally {
  await browser.close();
  c.close();
  await server.close();
  rmSync(dataDir, { recursive: true, force: true });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const m = (k: keyof (typeof runs)[number]): string => `${median(runs.map((x) => x[k])).toFixed(0)} ms`;
process.stdout.write([
  '',
  `| ${VMS} VMs (${RUNNING} running), median of ${RUNS}, load average ${loadavg()[0].toFixed(1)} on ${cpus().length} cores | time |`,
  '| --- | ---: |',
  `| login page (cold cache) | ${m('loginPage')} |`,
  `| login to the full tree, live | ${m('loginToTree')} |`,
  `| reload to interactive (tree complete, search ready) | ${m('reload')} |`,
  `| — of which CPU: the page's main thread | ${m('pageCpu')} |`,
  `| — of which CPU: the daemon | ${m('daemonCpu')} |`,
  `| search narrows the tree to one VM | ${m('search')} |`,
  '',
].join('\n'));
