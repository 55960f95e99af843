/**
 * API benchmark: a Xenon daemon (child process, sim backend) holding 10,000
 * VMs, measured with wrk — VM.get_record and VM.get_all_records calls/s over
 * JSON-RPC and XML-RPC — against a bare Node HTTP server (bare-server.mjs,
 * also a child process) that answers the same requests with the same bytes;
 * then event.from notification latency against the bare server's round trip.
 *
 * Run: npx tsx bench/api/run.ts [--vms N] [--seconds N] [--connections N]
 *        [--all-seconds N] [--all-connections N] [--threads N] [--runs N]
 *        [--rounds N] [--data-parent DIR] [--disk-parent DIR] [--no-write]
 *        (profiling: [--only populate|throughput|latency] [--cases recJson,…]
 *         [--server-node-args "--cpu-prof --cpu-prof-dir DIR"])
 * Writes its figures into docs/benchmarks.md under "## API (bench/api)".
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { cpSync, createWriteStream, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeMethodCall } from '../../src/wire/xmlrpc.ts';
import { writeBenchmarkSection } from '../benchmarks-doc.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const argv = process.argv.slice(2);
const opt = (name: string, def: number): number => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : def;
};
const optStr = (name: string, def: string): string => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : def;
};
const VMS = opt('--vms', 10_000);
const SECONDS = opt('--seconds', 5);
const CONNECTIONS = opt('--connections', 32);
const ALL_SECONDS = opt('--all-seconds', 5);
const ALL_CONNECTIONS = opt('--all-connections', 2);
const THREADS = opt('--threads', 1);
const RUNS = opt('--runs', 2);
const ROUNDS = opt('--rounds', 300);
/** Where the daemon's data dir lives for populating, throughput and the first latency run (tmpfs by default). */
const DATA_PARENT = optStr('--data-parent', existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
/** Where its database is copied for the second latency run, with SQLite's fsync on a real disk. */
const DISK_PARENT = optStr('--disk-parent', os.tmpdir());
const WRITE = !argv.includes('--no-write');
/** Extra node options for the Xenon child, e.g. "--cpu-prof --cpu-prof-dir /tmp/prof" when profiling. */
const SERVER_NODE_ARGS = optStr('--server-node-args', '').split(' ').filter(Boolean);
/** Stop after populating and this phase: populate | throughput | latency (for profiling one phase). */
const ONLY = optStr('--only', '');
/** Which throughput cases to run (comma-separated: recJson,recXml,allJson,allXml); all by default. */
const CASES = optStr('--cases', 'recJson,recXml,allJson,allXml').split(',');
const PASSWORD = 'xenon-bench-root';
/** The latency loop's pause between sending event.from and sending the change. */
const PAUSE_MS = 3;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'xenon-bench-api-'));
const dataDir = mkdtempSync(path.join(DATA_PARENT, 'xenon-bench-api-data-'));
const children: ChildProcess[] = [];
let diskDir: string | null = null;
const log = (s: string): void => void process.stdout.write(`${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ processes

/** Spawns a server and waits for its "listening on URL" line; its output goes to a log file. */
function startChild(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; url: string }> {
  const logPath = path.join(tmp, `${name}.log`);
  const out = createWriteStream(logPath);
  const child = spawn(cmd, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer): void => {
      out.write(d);
      buf += d.toString();
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(buf);
      if (m) {
        child.stdout!.off('data', onData);
        child.stdout!.pipe(out);
        resolve({ child, url: m[1] });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.pipe(out);
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before listening; see ${logPath}:\n${readFileSync(logPath, 'utf8').slice(-2000)}`)));
  });
}

function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill('SIGTERM');
  return exited;
}

function stopChildren(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
}
process.on('exit', stopChildren);

// ------------------------------------------------------------------ HTTP

interface Reply {
  text: string;
  /** performance.now() when the whole reply had arrived */
  at: number;
}

function post(agent: http.Agent, url: string, body: string, type: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers: { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const at = performance.now();
        resolve({ text: Buffer.concat(chunks).toString('utf8'), at });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const jsonBody = (method: string, params: unknown[]): string => JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 });

let nextId = 1;
/** A JSON-RPC call; throws the XenAPI error. */
async function call(agent: http.Agent, base: string, method: string, params: unknown[]): Promise<unknown> {
  const r = await post(agent, `${base}/jsonrpc`, JSON.stringify({ jsonrpc: '2.0', method, params, id: nextId++ }), 'application/json');
  const reply = JSON.parse(r.text) as { result?: unknown; error?: { message: string; data?: unknown[] } };
  if (reply.error) throw new Error(`${method}: ${reply.error.message} ${JSON.stringify(reply.error.data ?? [])}`);
  return reply.result;
}

// ------------------------------------------------------------------ wrk

interface WrkResult {
  rps: number;
  latencyAvg: string;
  requests: number;
  errors: string;
}

function wrk(url: string, body: string, type: string, connections: number, seconds: number): WrkResult {
  const bodyFile = path.join(tmp, `body-${Math.random().toString(36).slice(2)}`);
  writeFileSync(bodyFile, body);
  const script = path.join(tmp, 'post.lua');
  writeFileSync(
    script,
    `local f = assert(io.open(${JSON.stringify(bodyFile)}, "rb"))\nwrk.method = "POST"\nwrk.body = f:read("*a")\nf:close()\nwrk.headers["Content-Type"] = ${JSON.stringify(type)}\n`,
  );
  const out = execFileSync('wrk', [`-t${Math.min(THREADS, connections)}`, `-c${connections}`, `-d${seconds}s`, '--timeout', '60s', '-s', script, url], { encoding: 'utf8' });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const latencyAvg = /Latency\s+(\S+)/.exec(out)?.[1] ?? '?';
  const errs = [/Socket errors:.*$/m.exec(out)?.[0], /Non-2xx or 3xx responses:.*$/m.exec(out)?.[0]].filter(Boolean).join('; ');
  if (errs) log(`  wrk reported: ${errs}`);
  return { rps, latencyAvg, requests, errors: errs };
}

/**
 * For the multi-megabyte get_all_records replies, where one call can outlast a
 * wrk run: `conns` keep-alive connections call back to back until both
 * `seconds` and `minCalls` are reached; replies are drained, not kept.
 */
async function drainLoad(url: string, body: string, type: string, conns: number, seconds: number, minCalls: number): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: conns });
  const once = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = http.request(url, { method: 'POST', agent, headers: { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) } }, (res) => {
        if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}`));
        res.on('data', () => undefined);
        res.on('end', () => resolve());
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  const t0 = performance.now();
  let calls = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() - t0 < seconds * 1000 || calls < minCalls) {
      await once();
      calls++;
    }
  };
  await Promise.all(Array.from({ length: conns }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  agent.destroy();
  return calls / elapsed;
}

// ------------------------------------------------------------------ stats

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
interface Latency {
  initialEvents: number;
  initialMs: number;
  ev: Dist;
  change: Dist;
}
interface Dist {
  p50: number;
  p99: number;
  max: number;
  n: number;
}
function dist(xs: number[]): Dist {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s[s.length - 1], n: s.length };
}
const ms = (x: number): string => `${x.toFixed(2)} ms`;
const fmt = (x: number): string => (x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(2));

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const cpuModel = os.cpus()[0]?.model ?? 'unknown CPU';
  const nproc = os.availableParallelism();
  const load0 = os.loadavg()[0];
  const wrkVersion = (() => {
    try {
      execFileSync('wrk', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const o = `${(e as { stdout?: string }).stdout ?? ''}`;
      return /wrk (\S+)/.exec(o)?.[1] ?? '';
    }
    return '';
  })();
  log(`machine: ${nproc} × ${cpuModel}, Node ${process.version}, wrk ${wrkVersion}, load average ${load0.toFixed(2)}`);
  log(`data dir: ${dataDir}`);

  // 1. Xenon, populated
  const xenon = await startChild(
    'xenon',
    process.execPath,
    [...SERVER_NODE_ARGS, '--import', 'tsx', 'src/cli/xenon.ts', 'server', '--data-dir', dataDir, '--http', '127.0.0.1:0', '--backend', 'sim', '--network', 'none', '--log-level', 'warn'],
    { ...process.env, XENON_ROOT_PASSWORD: PASSWORD },
  );
  log(`xenon: ${xenon.url} (pid ${xenon.child.pid})`);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const base = xenon.url;
  const session = (await call(agent, base, 'session.login_with_password', ['root', PASSWORD, '2.21', 'bench-api'])) as string;
  const [template] = (await call(agent, base, 'VM.get_by_name_label', [session, 'Xenon test guest'])) as string[];
  const trec = (await call(agent, base, 'VM.get_record', [session, template])) as Record<string, unknown>;
  const { uuid: _u, ...fields } = trec;
  const t0 = performance.now();
  const refs: string[] = new Array(VMS);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < VMS; i = next++) {
      refs[i] = (await call(agent, base, 'VM.create', [
        session,
        {
          ...fields,
          name_label: `bench-vm-${i}`,
          name_description: `benchmark VM ${i} cloned from the Xenon test guest template`,
          is_a_template: false,
          is_default_template: false,
          other_config: { ...(trec.other_config as object), bench_index: String(i) },
        },
      ])) as string;
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  const populateS = (performance.now() - t0) / 1000;
  const count = ((await call(agent, base, 'VM.get_all', [session])) as string[]).length;
  log(`populated ${VMS} VMs in ${populateS.toFixed(1)} s (${fmt(VMS / populateS)} VM.create/s, 32 concurrent JSON-RPC calls); VM.get_all → ${count}`);

  if (ONLY === 'populate') return;

  // 2. the requests and Xenon's replies to them, which the bare server repeats
  const vm = refs[Math.floor(VMS / 2)];
  const cases = {
    recJson: { path: '/jsonrpc', bare: '/jsonrpc', type: 'application/json', body: jsonBody('VM.get_record', [session, vm]) },
    recXml: { path: '/', bare: '/', type: 'text/xml', body: encodeMethodCall('VM.get_record', [session, vm]) },
    allJson: { path: '/jsonrpc', bare: '/jsonrpc-all', type: 'application/json', body: jsonBody('VM.get_all_records', [session]) },
    allXml: { path: '/', bare: '/xml-all', type: 'text/xml', body: encodeMethodCall('VM.get_all_records', [session]) },
  };
  const table: Record<string, { type: string; file: string }> = {};
  const sizes: Record<string, number> = {};
  for (const [k, c] of Object.entries(cases)) {
    const r = await post(agent, base + c.path, c.body, c.type);
    const ok = c.type === 'application/json' ? !('error' in (JSON.parse(r.text) as object)) : r.text.includes('<value>Success</value>');
    if (!ok) throw new Error(`${k}: Xenon answered with an error: ${r.text.slice(0, 500)}`);
    const file = path.join(tmp, `reply-${k}`);
    writeFileSync(file, r.text);
    table[c.bare] = { type: c.type === 'application/json' ? 'application/json' : 'text/xml', file };
    sizes[k] = Buffer.byteLength(r.text);
  }
  if (!JSON.parse(readFileSync(table['/jsonrpc-all'].file, 'utf8')).result[vm]) throw new Error('get_all_records lacks the VM');
  const tableFile = path.join(tmp, 'replies.json');
  writeFileSync(tableFile, JSON.stringify(table));
  const bare = await startChild('bare', process.execPath, [path.join(REPO, 'bench/api/bare-server.mjs'), tableFile], process.env);
  log(`bare: ${bare.url} (pid ${bare.child.pid}); reply sizes: get_record JSON ${sizes.recJson} B, XML ${sizes.recXml} B; get_all_records JSON ${(sizes.allJson / 1e6).toFixed(1)} MB, XML ${(sizes.allXml / 1e6).toFixed(1)} MB`);

  // 3. throughput, Xenon and bare interleaved, best of RUNS (the machine is shared)
  type Key = keyof typeof cases;
  const best: Record<string, { xenon: number[]; bare: number[] }> = {};
  const measure = (k: Key, seconds: number, conns: number): void => {
    if (!CASES.includes(k)) return;
    const c = cases[k];
    best[k] = { xenon: [], bare: [] };
    wrk(base + c.path, c.body, c.type, conns, 1); // warm-up
    wrk(bare.url + c.bare, c.body, c.type, conns, 1);
    for (let i = 0; i < RUNS; i++) {
      const order: ('xenon' | 'bare')[] = i % 2 === 0 ? ['xenon', 'bare'] : ['bare', 'xenon'];
      for (const who of order) {
        const r = who === 'xenon' ? wrk(base + c.path, c.body, c.type, conns, seconds) : wrk(bare.url + c.bare, c.body, c.type, conns, seconds);
        best[k][who].push(r.rps);
        log(`  ${k} ${who}: ${fmt(r.rps)} calls/s (avg latency ${r.latencyAvg})`);
      }
    }
  };
  const measureBig = async (k: Key, seconds: number, conns: number): Promise<void> => {
    if (!CASES.includes(k)) return;
    const c = cases[k];
    best[k] = { xenon: [], bare: [] };
    for (const who of ['xenon', 'bare'] as const) {
      const url = who === 'xenon' ? base + c.path : bare.url + c.bare;
      await drainLoad(url, c.body, c.type, 1, 0, 1); // warm-up
      const rps = await drainLoad(url, c.body, c.type, conns, seconds, 2 * conns);
      best[k][who].push(rps);
      log(`  ${k} ${who}: ${fmt(rps)} calls/s`);
    }
  };
  if (ONLY !== 'latency') {
  log(`VM.get_record: ${CONNECTIONS} connections, ${SECONDS} s, ${THREADS} wrk thread(s), best of ${RUNS}`);
  measure('recJson', SECONDS, CONNECTIONS);
  measure('recXml', SECONDS, CONNECTIONS);
  log(`VM.get_all_records: ${ALL_CONNECTIONS} connections, at least ${ALL_SECONDS} s and ${2 * ALL_CONNECTIONS} calls`);
  await measureBig('allJson', ALL_SECONDS, ALL_CONNECTIONS);
  await measureBig('allXml', ALL_SECONDS, ALL_CONNECTIONS);
  }
  if (ONLY === 'throughput') return;

  // 4. event.from latency
  const latency = async (base: string, session: string, latVm: string): Promise<Latency> => {
    const evAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const chAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const tInit = performance.now();
    const first = (await call(evAgent, base, 'event.from', [session, ['VM'], '', 0])) as { events: unknown[]; token: string };
    const initialMs = performance.now() - tInit;
    let token = first.token;
    const lat: number[] = [];
    const changeRtt: number[] = [];
    const evUrl = `${base}/jsonrpc`;
    for (let i = 0; i < ROUNDS; i++) {
      const want = `latency round ${i}`;
      const wait = (): Promise<Reply> => post(evAgent, evUrl, jsonBody('event.from', [session, ['VM'], token, 30]), 'application/json');
      let pending = wait();
      await sleep(PAUSE_MS); // let the server park the waiter
      const sent = performance.now();
      const change = post(chAgent, evUrl, jsonBody('VM.set_name_description', [session, latVm, want]), 'application/json');
      for (;;) {
        const r = await pending;
        const reply = JSON.parse(r.text) as { result?: { events: { ref: string; snapshot: { name_description: string } }[]; token: string }; error?: unknown };
        if (!reply.result) throw new Error(`event.from failed: ${r.text.slice(0, 300)}`);
        token = reply.result.token;
        if (reply.result.events.some((e) => e.ref === latVm && e.snapshot.name_description === want)) {
          lat.push(r.at - sent);
          break;
        }
        pending = wait();
      }
      const cr = await change;
      changeRtt.push(cr.at - sent);
      const c = JSON.parse(cr.text) as { error?: unknown };
      if (c.error) throw new Error(`VM.set_name_description failed: ${JSON.stringify(c.error)}`);
    }
    evAgent.destroy();
    chAgent.destroy();
    const r = { initialEvents: first.events.length, initialMs, ev: dist(lat), change: dist(changeRtt) };
    log(`  event.from(['VM'], '', 0): ${r.initialEvents} events in ${r.initialMs.toFixed(0)} ms; wake-up p50 ${ms(r.ev.p50)} p99 ${ms(r.ev.p99)} max ${ms(r.ev.max)}; change round trip p50 ${ms(r.change.p50)} p99 ${ms(r.change.p99)}`);
    return r;
  };
  log(`event.from latency, data dir under ${DATA_PARENT}:`);
  const latFirst = await latency(base, session, refs[0]);
  // the same database copied to a disk, where each commit's fsync costs: the daemon as deployed
  let latSecond: Latency | null = null;
  if (path.resolve(DISK_PARENT) !== path.resolve(DATA_PARENT)) {
    await stopChild(xenon.child);
    diskDir = mkdtempSync(path.join(DISK_PARENT, 'xenon-bench-api-data-'));
    cpSync(dataDir, diskDir, { recursive: true, filter: (src) => { const st = lstatSync(src); return st.isFile() || st.isDirectory(); } });
    const x2 = await startChild(
      'xenon-disk',
      process.execPath,
      [...SERVER_NODE_ARGS, '--import', 'tsx', 'src/cli/xenon.ts', 'server', '--data-dir', diskDir, '--http', '127.0.0.1:0', '--backend', 'sim', '--network', 'none', '--log-level', 'warn'],
      { ...process.env, XENON_ROOT_PASSWORD: PASSWORD },
    );
    const s2 = (await call(agent, x2.url, 'session.login_with_password', ['root', PASSWORD, '2.21', 'bench-api'])) as string;
    log(`event.from latency, the same database copied under ${DISK_PARENT} (restarted daemon ${x2.url}):`);
    latSecond = await latency(x2.url, s2, refs[0]);
  }
  const first = { events: { length: latFirst.initialEvents } };
  const initialMs = latFirst.initialMs;

  // round trips for comparison: the bare server, and a Xenon VM.get_record, one connection each, sequential
  // (with the latency loop's pause before each request too: waking an idle process costs on a VM)
  const rtt = async (url: string, body: string, type: string, pauseMs: number): Promise<Dist> => {
    const a = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const xs: number[] = [];
    for (let i = 0; i < ROUNDS + 20; i++) {
      if (pauseMs) await sleep(pauseMs);
      const s = performance.now();
      const r = await post(a, url, body, type);
      if (i >= 20) xs.push(r.at - s);
    }
    a.destroy();
    return dist(xs);
  };
  const bareRtt = await rtt(bare.url + '/jsonrpc', cases.recJson.body, 'application/json', 0);
  const bareIdleRtt = await rtt(bare.url + '/jsonrpc', cases.recJson.body, 'application/json', PAUSE_MS);
  const xenonRtt = latSecond ? null : await rtt(base + '/jsonrpc', cases.recJson.body, 'application/json', PAUSE_MS);
  log(`event.from latency: p50 ${ms(latFirst.ev.p50)} p99 ${ms(latFirst.ev.p99)}; bare RTT p50 ${ms(bareRtt.p50)} p99 ${ms(bareRtt.p99)}, after a pause p50 ${ms(bareIdleRtt.p50)} p99 ${ms(bareIdleRtt.p99)}`);
  const load1 = os.loadavg()[0];
  if (ONLY) return;
  agent.destroy();

  // 5. report
  const max = (xs: number[]): number => Math.max(...xs);
  const rows: string[][] = [];
  const row = (label: string, k: Key, perCall = 1): void => {
    const x = max(best[k].xenon);
    const b = max(best[k].bare);
    const extra = perCall > 1 ? ` (${fmt(x * perCall)} records/s)` : '';
    rows.push([label, `${fmt(x)}${extra}`, fmt(b), `${((100 * x) / b).toFixed(0)}%`]);
  };
  row(`VM.get_record, JSON-RPC (${CONNECTIONS} conns)`, 'recJson');
  row(`VM.get_record, XML-RPC (${CONNECTIONS} conns)`, 'recXml');
  row(`VM.get_all_records (${VMS} VMs), JSON-RPC (${ALL_CONNECTIONS} conns, Node client)`, 'allJson', count);
  row(`VM.get_all_records (${VMS} VMs), XML-RPC (${ALL_CONNECTIONS} conns, Node client)`, 'allXml', count);
  const runsOf = (k: Key): string => `${best[k].xenon.map(fmt).join(', ')} / ${best[k].bare.map(fmt).join(', ')}`;
  const date = new Date().toISOString().slice(0, 10);
  const md = [
    '## API (bench/api)',
    '',
    `Reproduce: \`npx tsx bench/api/run.ts\` (options: \`--vms N --seconds N --connections N --all-seconds N --all-connections N --threads N --runs N --rounds N --data-parent DIR --disk-parent DIR --no-write\`; for profiling: \`--only populate|throughput|latency --cases recJson,recXml,allJson,allXml --server-node-args "--cpu-prof --cpu-prof-dir DIR"\`, then \`npx tsx bench/api/profile-summary.ts FILE.cpuprofile\`).`,
    '',
    `Measured ${date} on ${cpuModel} (${nproc} vCPU), Node ${process.version}, wrk ${wrkVersion} (${THREADS} thread), load average ${load0.toFixed(1)} at the start and ${load1.toFixed(1)} at the end of the run (the machine is shared with other engineers' benchmarks, so figures vary between runs; get_record figures are the best of ${RUNS} interleaved ${SECONDS} s wrk runs; get_all_records, whose calls can outlast a wrk run, is driven by a Node client with ${ALL_CONNECTIONS} keep-alive connections that drains the replies, for at least ${ALL_SECONDS} s and ${2 * ALL_CONNECTIONS} calls, one run each).`,
    `Xenon runs as a child process (\`xenon server --backend sim\`, \`--network none\`, data dir under ${DATA_PARENT}, default durability: SQLite WAL with synchronous=NORMAL, i.e. every commit is in the WAL before the reply and survives a crash of the daemon) holding ${count} VMs created through VM.create from the "Xenon test guest" template's record (${fmt(VMS / populateS)} VM.create/s with 32 concurrent JSON-RPC calls).`,
    `The baseline is a bare Node HTTP server (bench/api/bare-server.mjs, child process, same Node) that reads each POST body and answers with the very bytes Xenon gave for that request (get_record: JSON ${sizes.recJson} B, XML ${sizes.recXml} B; get_all_records: JSON ${(sizes.allJson / 1e6).toFixed(1)} MB, XML ${(sizes.allXml / 1e6).toFixed(1)} MB), driven by the same wrk command.`,
    '',
    '| calls/s | Xenon | bare Node server | Xenon / bare |',
    '|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    `Runs (Xenon / bare): get_record JSON ${runsOf('recJson')}; XML ${runsOf('recXml')}; get_all_records JSON ${runsOf('allJson')}; XML ${runsOf('allXml')}. Target: Xenon ≥ 40% of the bare server for VM.get_record.`,
    '',
    'Xenon remembers the JSON and XML-RPC text of each database record for as long as that record object lives (records are frozen and replaced on every change), so the repeated get_record of one VM here is served from that cache, as a client polling an unchanged VM would be, and get_all_records splices the cached texts; the first encoding of a record costs as before.',
    '',
    `event.from notification latency with ${count} VMs: one connection waits in \`event.from(['VM'], token, 30)\`, another sends \`VM.set_name_description\`; latency is from sending the change to the arrival of the whole event.from reply carrying it (one clock, the benchmark process), ${latFirst.ev.n} rounds per daemon. Target p99 < 5 ms.`,
    '',
    '| latency | p50 | p99 | max |',
    '|---|---:|---:|---:|',
    `| event.from wake-up (change sent → event received), data dir under ${DATA_PARENT} | ${ms(latFirst.ev.p50)} | ${ms(latFirst.ev.p99)} | ${ms(latFirst.ev.max)} |`,
    `| the change's own round trip (VM.set_name_description, committed to SQLite), under ${DATA_PARENT} | ${ms(latFirst.change.p50)} | ${ms(latFirst.change.p99)} | ${ms(latFirst.change.max)} |`,
    ...(latSecond
      ? [
          `| event.from wake-up, the same database under ${DISK_PARENT} (disk) | ${ms(latSecond.ev.p50)} | ${ms(latSecond.ev.p99)} | ${ms(latSecond.ev.max)} |`,
          `| the change's own round trip, under ${DISK_PARENT} | ${ms(latSecond.change.p50)} | ${ms(latSecond.change.p99)} | ${ms(latSecond.change.max)} |`,
        ]
      : []),
    `| baseline: bare server round trip, ${PAUSE_MS} ms pause before each (as in the event loop above) | ${ms(bareIdleRtt.p50)} | ${ms(bareIdleRtt.p99)} | ${ms(bareIdleRtt.max)} |`,
    `| baseline: bare server round trip, back to back | ${ms(bareRtt.p50)} | ${ms(bareRtt.p99)} | ${ms(bareRtt.max)} |`,
    ...(xenonRtt ? [`| Xenon VM.get_record round trip, ${PAUSE_MS} ms pause before each | ${ms(xenonRtt.p50)} | ${ms(xenonRtt.p99)} | ${ms(xenonRtt.max)} |`] : []),
    '',
    `The first daemon's data dir is on ${DATA_PARENT} (tmpfs by default: SQLite's fsync costs nothing there, so these rows show the API and event path); the disk rows come from a second daemon started on a copy of the same database under ${DISK_PARENT} (its event log starts empty, which does not matter with a current token), on a real disk, as deployed with the default durability (--durability power would add an fsync per commit). The pause lets the server park the waiter; the paused bare round trip shows what waking idle processes costs on this VM.`,
    '',
    `First \`event.from(['VM'], '', 0)\` (every VM, ${first.events.length} events, JSON-RPC, parse included): ${initialMs.toFixed(0)} ms.`,
    '',
  ].join('\n');
  log('');
  log(md);

  if (WRITE) {
    const docPath = writeBenchmarkSection('## API (bench/api)', md);
    log(`wrote ${path.relative(REPO, docPath)}`);
  }
}

try {
  await main();
} finally {
  const exited = children.map((c) => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', r))));
  stopChildren();
  await Promise.race([Promise.all(exited), sleep(10_000)]);
  rmSync(tmp, { recursive: true, force: true });
  rmSync(dataDir, { recursive: true, force: true });
  if (diskDir) rmSync(diskDir, { recursive: true, force: true });
}
