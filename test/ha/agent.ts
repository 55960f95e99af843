/**
 * One test "host" of the HA engine, run inside its network namespace by
 * engine.test.ts: the engine (etcd member, lease, fencer, election, peers)
 * and a database (the real store, in memory) whose writes go to the redo log
 * while this host is master. It reports on stdout, one JSON line each, and
 * takes commands on stdin.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Store } from '../../src/db/store.ts';
import type { Term } from '../../src/ha/election.ts';
import { monotonicNs } from '../../src/ha/etcd-client.ts';
import { HaEngine, type HaEngineOptions } from '../../src/ha/engine.ts';
import { RedoFeeder } from '../../src/ha/redo-feeder.ts';

type AgentConfig = Pick<HaEngineOptions, 'dataDir' | 'poolUuid' | 'hostUuid' | 'address' | 'members' | 'runDir'>;
const cfg = JSON.parse(process.argv[2]) as AgentConfig;

const say = (ev: string, fields: Record<string, unknown> = {}): void => {
  process.stdout.write(`${JSON.stringify({ ev, at: monotonicNs().toString(), ...fields })}\n`);
};

const store = new Store({ path: ':memory:' });
let feeder: RedoFeeder | undefined;
/** The protected VM: its run lock's name and its disk, a qcow2 file every host sees. */
let protectedVm: { vm: string; image: string } | undefined;

/** Runs the VM here as QEMU would (paused, its disk attached, so QEMU holds the image's write lock); reports whether it stayed up. */
function runGuest(image: string, ev: string): void {
  const dir = join(cfg.runDir, randomUUID());
  mkdirSync(dir, { recursive: true });
  const argv = ['-machine', 'pc,accel=tcg', '-m', '32', '-S', '-nodefaults', '-display', 'none', '-drive', `file=${image},format=qcow2,if=virtio`, '-qmp', `unix:${join(dir, 'qmp.sock')},server=on,wait=off`];
  const qemu = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  qemu.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let exited = false;
  qemu.on('exit', () => (exited = true));
  setTimeout(() => say(ev, { ok: !exited, pid: qemu.pid ?? null, stderr: stderr.trim() }), 1500);
}

/** As master: every protected VM without a run lock (its host died, or never ran it) is claimed and started here. */
async function restartUnowned(engine: HaEngine): Promise<void> {
  if (!protectedVm || !engine.isMaster) return;
  if (await engine.locks.owner(protectedVm.vm)) return;
  if (await engine.locks.claim(protectedVm.vm, cfg.hostUuid, engine.leaseId)) runGuest(protectedVm.image, 'restarted');
}

async function becomeMaster(engine: HaEngine, term: Term): Promise<void> {
  const contents = await engine.redo.read();
  const rebuilt = new Set<string>();
  for (const r of contents.snapshot) if (r.rec && r.cls === 'network') rebuilt.add(String(r.rec.name_label));
  for (const entry of contents.entries) for (const r of entry) if (r.cls === 'network') r.rec ? rebuilt.add(String(r.rec.name_label)) : undefined;
  say('rebuilt', { networks: [...rebuilt].sort(), entries: contents.entries.length });
  // the test's database starts empty: the rebuilt rows are reported, not applied (the pool's replica applies them)
  feeder = new RedoFeeder(store, engine.redo, term, contents.nextSeq, (err) => say('deposed', { error: err.message }));
  await feeder.start();
  say('master', { revision: term.revision });
  await restartUnowned(engine);
}

const engine = new HaEngine({
  ...cfg,
  log: (msg, fields) => process.stderr.write(`${JSON.stringify({ msg, ...fields })}\n`),
  onTerm: (term, mine) => {
    say('term', { host: term?.host ?? null, revision: term?.revision ?? null, mine });
    if (term && mine) becomeMaster(engine, term).catch((err: unknown) => say('error', { error: String(err) }));
  },
  onFenced: (why) => say('fenced', { why, deadline: engine.deadlineNs.toString() }),
  onGuestsKilled: (killed) => say('guestsKilled', { killed }),
  onRecovered: () => say('recovered', { lease: engine.leaseId }),
  onHostGone: (host) => {
    say('hostGone', { host });
    restartUnowned(engine).catch((err: unknown) => say('error', { error: String(err) }));
  },
});

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as { op: string; name?: string; vm?: string; image?: string };
  if (cmd.op === 'write') {
    const name = cmd.name ?? 'x';
    try {
      store.transact((tx) => tx.create('network', { name_label: name, bridge: `br-${name}` }));
    } catch (err) {
      say('wrote', { name, ok: false, error: String(err) });
      return;
    }
    (feeder ? feeder.barrier() : Promise.reject(new Error('not master')))
      .then(() => say('wrote', { name, ok: true }))
      .catch((err: unknown) => say('wrote', { name, ok: false, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }));
  } else if (cmd.op === 'protect' && cmd.vm && cmd.image) {
    protectedVm = { vm: cmd.vm, image: cmd.image };
  } else if (cmd.op === 'run' && protectedVm) {
    const vm = protectedVm;
    engine.locks.claim(vm.vm, cfg.hostUuid, engine.leaseId).then(
      (ok) => (ok ? runGuest(vm.image, 'running') : say('running', { ok: false, stderr: 'run lock held elsewhere' })),
      (err: unknown) => say('running', { ok: false, stderr: String(err) }),
    );
  } else if (cmd.op === 'stop') {
    feeder?.stop();
    engine.stop({ stopMember: true }).then(() => process.exit(0), () => process.exit(1));
  }
});

engine.start().then(
  () => say('ready', { lease: engine.leaseId, fencer: engine.fencerPid ?? null, etcd: engine.member ? 'member' : 'client' }),
  (err: unknown) => {
    say('error', { error: String(err) });
    process.exit(1);
  },
);
