// Network benchmark: two namespaces through a Xenon OVS bridge (user-space
// netdev datapath, veth ports) vs two namespaces joined directly by a veth
// pair. Latency with ping, TCP throughput with iperf3 (Debian's) or, if it
// is missing, a small Node TCP sender/receiver run in each namespace.
//
//   npx tsx bench/net/run.ts [--seconds 5] [--rounds 3] [--no-write]
//
// Everything happens in namespaces created (and deleted) here.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir, cpus } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OvsBackend } from '../../src/network/ovs/ovs-backend.ts';
import { writeBenchmarkSection } from '../benchmarks-doc.ts';

const args = process.argv.slice(2);
const SECONDS = Number(args[args.indexOf('--seconds') + 1]) || 5;
const WRITE = !args.includes('--no-write');
const ROUNDS = Number(args[args.indexOf('--rounds') + 1]) || 3;
const id = randomBytes(3).toString('hex');
const SW = `xenon-bench-${id}`;
const ns = (n: string) => `${SW}-${n}`;
const created: string[] = [];

function run(cmd: string, a: string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((res, rej) => {
    const c = execFile(cmd, a, { timeout: timeoutMs, maxBuffer: 32 << 20 }, (e, out, err) =>
      e ? rej(new Error(`${cmd} ${a.join(' ')}: ${err || e.message}`)) : res(String(out)));
    c.stdin?.on('error', () => {});
    c.stdin?.end();
  });
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function addNs(name: string) {
  await run('ip', ['netns', 'add', name]);
  created.push(name);
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

interface Lat { medianMs: number; p99Ms: number; avgMs: number; minMs: number; maxMs: number; loss: number }
async function latency(from: string, ip: string, count = 1000): Promise<Lat> {
  const out = await run('ip', ['netns', 'exec', from, 'ping', '-c', String(count), '-i', '0.002', ip]);
  const t = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  if (!t.length) throw new Error(`ping output: ${out.slice(-500)}`);
  const q = (p: number) => t[Math.min(t.length - 1, Math.floor(p * t.length))]!;
  return {
    medianMs: q(0.5), p99Ms: q(0.99), avgMs: t.reduce((a, b) => a + b, 0) / t.length,
    minMs: t[0]!, maxMs: t.at(-1)!, loss: 1 - t.length / count,
  };
}

/** Flood ping: requests/s, one outstanding request at a time. */
async function floodRate(from: string, ip: string, count = 5000): Promise<number> {
  const t0 = process.hrtime.bigint();
  const out = await run('ip', ['netns', 'exec', from, 'ping', '-f', '-c', String(count), '-q', ip]);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const got = Number(/(\d+) received/.exec(out)?.[1] ?? 0);
  return got / secs;
}

const NODE_SINK = `const s=require('net').createServer(c=>{let n=0,t0=0;c.on('data',d=>{if(!t0)t0=process.hrtime.bigint();n+=d.length});c.on('end',()=>{const s=Number(process.hrtime.bigint()-t0)/1e9;console.log(JSON.stringify({bytes:n,secs:s}));process.exit(0)})}).listen(5201,process.argv[1])`;
const NODE_SRC = `const c=require('net').connect(5201,process.argv[1]);const b=Buffer.alloc(1<<16);const end=Date.now()+Number(process.argv[2])*1000;function w(){while(Date.now()<end){if(!c.write(b))return c.once('drain',w)}c.end()}c.on('connect',w)`;

/** TCP throughput, Gbit/s, client `from` -> server `to` (at ip). */
async function throughput(from: string, to: string, ip: string, secs: number): Promise<{ gbps: number; tool: string }> {
  if (existsSync('/usr/bin/iperf3')) {
    const srv = spawn('ip', ['netns', 'exec', to, 'iperf3', '-s', '-1', '-B', ip, '-p', '5201'], { stdio: 'ignore' });
    try {
      let out = '';
      for (let i = 0; i < 5; i++) {
        await sleep(100);
        try {
          out = await run('ip', ['netns', 'exec', from, 'iperf3', '-c', ip, '-p', '5201', '-t', String(secs), '--connect-timeout', '3000', '-J'], (secs + 20) * 1000);
          break;
        } catch (e) {
          if (i === 4) throw e;
        }
      }
      const j = JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } };
      return { gbps: j.end.sum_received.bits_per_second / 1e9, tool: 'iperf3' };
    } finally {
      if (srv.exitCode === null) srv.kill();
    }
  }
  const sink = spawn('ip', ['netns', 'exec', to, process.execPath, '-e', NODE_SINK, ip], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  sink.stdout.on('data', (d) => (out += d));
  const done = new Promise((r) => sink.on('exit', r));
  await sleep(500);
  await run('ip', ['netns', 'exec', from, process.execPath, '-e', NODE_SRC, ip, String(secs)], (secs + 30) * 1000);
  await done;
  const { bytes, secs: s } = JSON.parse(out) as { bytes: number; secs: number };
  return { gbps: (bytes * 8) / s / 1e9, tool: 'node net (fallback)' };
}

let cleanup: () => Promise<void> = async () => {};
const step = (m: string) => process.stderr.write(`.. ${m}\n`);

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'xenon-bench-'));
  const ovs = new OvsBackend({ runDir: join(dir, 'ovs'), netns: SW });
  let ovsStarted = false;
  cleanup = async () => {
    if (ovsStarted) await ovs.stop().catch((e) => console.error('ovs stop:', e));
    ovsStarted = false;
    for (const n of created.splice(0).reverse()) await run('ip', ['netns', 'del', n]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // switch namespace with the OVS bridge; hosts a, b on it
    await addNs(SW);
    for (const n of ['a', 'b', 'c', 'd']) await addNs(ns(n));
    await ovs.start();
    ovsStarted = true;
    await ovs.ensureBridge('xbench0');
    const hosts: [string, string][] = [['a', '10.99.0.1'], ['b', '10.99.0.2']];
    for (const [h, ip] of hosts) {
      await run('ip', ['link', 'add', `p${h}`, 'netns', SW, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns(h)]);
      await run('ip', ['-n', ns(h), 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      await run('ip', ['-n', ns(h), 'link', 'set', 'eth0', 'up']);
      await ovs.addPort(`p${h}`, 'xbench0');
    }
    // direct veth pair c <-> d
    await run('ip', ['link', 'add', 'eth0', 'netns', ns('c'), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns('d')]);
    for (const [h, ip] of [['c', '10.98.0.1'], ['d', '10.98.0.2']] as const) {
      await run('ip', ['-n', ns(h), 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      await run('ip', ['-n', ns(h), 'link', 'set', 'eth0', 'up']);
    }
    step('warm-up');
    // warm up (ARP, MAC learning, datapath flow cache)
    await latency(ns('a'), '10.99.0.2', 20);
    await latency(ns('c'), '10.98.0.2', 20);

    console.log(`Xenon network benchmark (${cpus().length} CPUs, TCP ${SECONDS}s per run)`);
    step('latency');
    const ovsLat = await latency(ns('a'), '10.99.0.2');
    const vethLat = await latency(ns('c'), '10.98.0.2');
    step('flood ping');
    const ovsRate = await floodRate(ns('a'), '10.99.0.2');
    const vethRate = await floodRate(ns('c'), '10.98.0.2');
    // TCP: alternate the two paths, ROUNDS times each, report the median
    // (the machine is shared, single runs vary a lot).
    const ovsRuns: number[] = [];
    const vethRuns: number[] = [];
    let tool = '';
    for (let i = 0; i < ROUNDS; i++) {
      step(`tcp round ${i + 1}/${ROUNDS}`);
      const o = await throughput(ns('a'), ns('b'), '10.99.0.2', SECONDS);
      const v = await throughput(ns('c'), ns('d'), '10.98.0.2', SECONDS);
      ovsRuns.push(o.gbps);
      vethRuns.push(v.gbps);
      tool = o.tool;
    }
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    const ovsTcp = { gbps: median(ovsRuns), tool, runs: ovsRuns };
    const vethTcp = { gbps: median(vethRuns), tool, runs: vethRuns };
    const r = { ovsLat, vethLat, ovsRate, vethRate, ovsTcp, vethTcp };
    const rows: [string, string, string, string][] = [
      ['ping RTT median (ms, 1000 pings, 2 ms interval)', r.ovsLat.medianMs.toFixed(3), r.vethLat.medianMs.toFixed(3), (r.ovsLat.medianMs / r.vethLat.medianMs).toFixed(1) + 'x'],
      ['ping RTT p99 / avg / max (ms)', `${r.ovsLat.p99Ms.toFixed(3)} / ${r.ovsLat.avgMs.toFixed(3)} / ${r.ovsLat.maxMs.toFixed(3)}`, `${r.vethLat.p99Ms.toFixed(3)} / ${r.vethLat.avgMs.toFixed(3)} / ${r.vethLat.maxMs.toFixed(3)}`, ''],
      ['flood ping (round trips/s, ping -f -c 5000)', r.ovsRate.toFixed(0), r.vethRate.toFixed(0), (r.ovsRate / r.vethRate).toFixed(3)],
      [`TCP throughput (Gbit/s, 1 stream, ${r.ovsTcp.tool}, median of ${ROUNDS}×${SECONDS}s)`, r.ovsTcp.gbps.toFixed(2), r.vethTcp.gbps.toFixed(2), (r.ovsTcp.gbps / r.vethTcp.gbps).toFixed(3)],
      ['TCP runs (Gbit/s)', r.ovsTcp.runs.map((x) => x.toFixed(2)).join(', '), r.vethTcp.runs.map((x) => x.toFixed(2)).join(', '), ''],
    ];
    const table = [
      '| metric | OVS netdev bridge (veth ports) | direct veth pair | ratio OVS/veth |',
      '|---|---|---|---|',
      ...rows.map((x) => `| ${x.join(' | ')} |`),
    ].join('\n');
    console.log(table);
    if (WRITE) await writeDocs(table, r.ovsTcp.tool);
  } finally {
    await cleanup();
  }
}

async function writeDocs(table: string, tool: string) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const section = [
    '## Network (bench/net)',
    '',
    `Reproduce: \`npx tsx bench/net/run.ts\` (as root; \`--seconds N\` per TCP run, \`--rounds N\`, \`--no-write\` to only print). Measured ${new Date().toISOString().slice(0, 10)} on the project machine (2 cores, Debian 12, OVS 3.1 user-space datapath, ${tool}).`,
    'Two network namespaces through a Xenon OVS bridge (`datapath_type=netdev`, each namespace joined by a veth whose other end is an OVS port) against two namespaces joined directly by one veth pair, in the same run.',
    '',
    table,
    '',
    'The machine is shared and has 2 cores: single runs vary by up to ±50 %, so TCP is the median of alternating rounds and latency is given as median/p99.',
    '',
    'The user-space datapath moves every packet through ovs-vswitchd (AF_PACKET on the veth ports), so it costs latency and throughput compared with the in-kernel veth path; on hosts with the OVS kernel module (`datapath_type=system`) the gap is much smaller.',
    '',
  ].join('\n');
  console.log(`wrote ${writeBenchmarkSection('## Network (bench/net)', section)}`);
}

let cleaning: Promise<void> | null = null;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`${sig}: cleaning up`);
    process.exitCode = 130;
    cleaning ??= cleanup().finally(() => process.exit(130));
  });
}
await main();
