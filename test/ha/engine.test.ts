// The HA engine on its own: three etcd members in three network namespaces, the
// master election, a lease lost to a network cut fencing the host's guests before
// etcd declares it dead, a new master rebuilding from the redo log, and the redo
// log refusing the deposed master.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { join } from 'node:path';
import { Agent, alive, HaNet, startGuest, type AgentEvent } from './helpers.ts';

const net = new HaNet();
const agents: Agent[] = [];
const guests: { kill(sig: NodeJS.Signals): boolean; pid?: number }[] = [];
const poolUuid = randomUUID();
let hosts: { ns: string; address: string; link: string }[] = [];

const ms = (fromNs: bigint, toNs: bigint): number => Number(toNs - fromNs) / 1e6;
const at = (e: AgentEvent): bigint => BigInt(e.at);

before(async () => {
  hosts = await net.setup(3);
  const members = hosts.map((h, i) => ({ name: `host-${i + 1}-${poolUuid.slice(0, 8)}`, address: h.address }));
  for (const [i, h] of hosts.entries()) {
    const dataDir = join(net.dir, `h${i + 1}`);
    agents.push(new Agent(h.ns, { dataDir, runDir: join(dataDir, 'run', 'qemu'), poolUuid, hostUuid: members[i].name, address: h.address, members }));
  }
});

after(async () => {
  for (const g of guests) g.kill('SIGKILL');
  for (const a of agents) a.kill();
  await net.teardown();
});

test('three members elect one master, whose writes reach the redo log', { timeout: 90_000 }, async () => {
  await Promise.all(agents.map((a) => a.waitFor((e) => e.ev === 'ready', 60_000)));
  const masters = await Promise.all(agents.map((a) => a.waitFor((e) => e.ev === 'term' && e.host !== null, 10_000)));
  assert.equal(new Set(masters.map((m) => m.host)).size, 1, 'every host sees the same master');
  assert.equal(masters.filter((m) => m.mine).length, 1, 'exactly one host is master');
  const master = agents.find((a) => a.events.some((e) => e.ev === 'term' && e.mine))!;
  await master.waitFor((e) => e.ev === 'master', 10_000);
  for (const name of ['a', 'b', 'c']) {
    master.send({ op: 'write', name });
    const w = await master.waitFor((e) => e.ev === 'wrote' && e.name === name, 10_000);
    assert.equal(w.ok, true, JSON.stringify(w));
  }
  const follower = agents.find((a) => a !== master)!;
  follower.send({ op: 'write', name: 'z' });
  const refused = await follower.waitFor((e) => e.ev === 'wrote' && e.name === 'z', 10_000);
  assert.equal(refused.ok, false, 'a host that is not master has no redo log to write');
});

test('cutting the master off fences its guests before etcd declares it dead; a survivor takes over from the redo log; the deposed master cannot write', { timeout: 90_000 }, async (t) => {
  const i = agents.findIndex((a) => a.events.some((e) => e.ev === 'term' && e.mine));
  const old = agents[i];
  const survivors = agents.filter((a) => a !== old);
  const guest = startGuest(hosts[i].ns, old.config.runDir);
  guests.push(guest);
  let guestDied: bigint | undefined;
  guest.on('exit', () => (guestDied = process.hrtime.bigint()));
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(alive(guest.pid), 'the stand-in guest runs');
  const marks = survivors.map((s) => s.events.length);

  const cut = process.hrtime.bigint();
  await net.setLink(hosts[i].link, false);

  const fenced = await old.waitFor((e) => e.ev === 'fenced', 10_000);
  const gone = await Promise.all(survivors.map((s, k) => s.waitFor((e) => e.ev === 'hostGone' && e.host === old.config.hostUuid, 20_000, marks[k])));
  const firstGone = gone.map(at).reduce((a, b) => (a < b ? a : b));
  assert.ok(guestDied !== undefined, 'the fencer killed the guest');
  // deadline = send time of the last acknowledged keepalive + TTL - 1 s; the last send was at most ~1 s before the cut
  assert.ok(ms(cut, at(fenced)) <= 4500, `fenced ${ms(cut, at(fenced))} ms after the cut`);
  assert.ok(guestDied! < firstGone, `the guest died ${ms(guestDied!, firstGone)} ms before a survivor saw the host's key deleted`);

  const next = await Promise.all(survivors.map((s, k) => s.waitFor((e) => e.ev === 'term' && e.host !== null && e.host !== old.config.hostUuid, 20_000, marks[k])));
  assert.equal(new Set(next.map((t) => t.host)).size, 1);
  const master = survivors.find((s) => s.config.hostUuid === next[0].host)!;
  const firstTerm = next.map(at).reduce((a, b) => (a < b ? a : b));
  t.diagnostic(`cut → fenced ${ms(cut, at(fenced)).toFixed(0)} ms, guest dead ${ms(cut, guestDied!).toFixed(0)} ms, key deleted (seen) ${ms(cut, firstGone).toFixed(0)} ms, new master ${ms(cut, firstTerm).toFixed(0)} ms`);
  const rebuilt = await master.waitFor((e) => e.ev === 'rebuilt', 10_000);
  assert.deepEqual(rebuilt.networks, ['a', 'b', 'c'], 'the new master finds every write of the old one');
  master.send({ op: 'write', name: 'd' });
  assert.equal((await master.waitFor((e) => e.ev === 'wrote' && e.name === 'd', 10_000)).ok, true);

  // back on the network, the old master's term is over: its redo log refuses it
  await net.setLink(hosts[i].link, true);
  old.send({ op: 'write', name: 'late' });
  const late = await old.waitFor((e) => e.ev === 'wrote' && e.name === 'late', 20_000);
  assert.equal(late.ok, false);
  assert.match(String(late.error), /DeposedError/);
});
