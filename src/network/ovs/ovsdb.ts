// Decoding of `ovs-vsctl -f json list <table>` output and a snapshot of the
// parts of the Open_vSwitch database the backend cares about.
import type { Runner } from '../exec.ts';

type Json = unknown;

function asSet(v: Json): Json[] {
  if (Array.isArray(v) && v[0] === 'set') return v[1] as Json[];
  return [v];
}
function asMap(v: Json): Record<string, string> {
  if (Array.isArray(v) && v[0] === 'map') return Object.fromEntries(v[1] as [string, string][]);
  return {};
}
function asUuid(v: Json): string {
  return Array.isArray(v) && v[0] === 'uuid' ? String(v[1]) : String(v);
}
function asOptInt(v: Json): number | undefined {
  if (typeof v === 'number') return v;
  const s = asSet(v);
  return typeof s[0] === 'number' ? s[0] : undefined;
}

interface Table {
  headings: string[];
  data: Json[][];
}
function rows(t: Table): Record<string, Json>[] {
  return t.data.map((row) => Object.fromEntries(t.headings.map((h, i) => [h, row[i]])));
}

export interface OvsBridge {
  name: string;
  fake: boolean;
  /** Real parent of a fake (VLAN) bridge; the bridge itself for real ones. */
  parent: string;
  tag?: number;
  owned: boolean;
  datapathType: string;
}

export interface OvsPort {
  name: string;
  /** Logical bridge as ovs-vsctl sees it (a fake bridge for ports with its tag). */
  bridge: string;
  realBridge: string;
  tag?: number;
  owned: boolean;
  role?: string;
  interfaces: string[];
  externalIds: Record<string, string>;
}

export interface OvsInterface {
  name: string;
  type: string;
  ofport?: number;
  externalIds: Record<string, string>;
}

export interface OvsSnapshot {
  bridges: Map<string, OvsBridge>;
  ports: Map<string, OvsPort>;
  ifaces: Map<string, OvsInterface>;
}

export async function snapshot(r: Runner, vsctlArgs: string[]): Promise<OvsSnapshot> {
  const out = await r.run('ovs-vsctl', [
    ...vsctlArgs, '-f', 'json',
    '--', '--columns=_uuid,name,ports,external_ids,datapath_type', 'list', 'Bridge',
    '--', '--columns=_uuid,name,tag,fake_bridge,interfaces,external_ids', 'list', 'Port',
    '--', '--columns=_uuid,name,type,ofport,external_ids', 'list', 'Interface',
  ], { noNetns: true });
  const tables = out.stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Table);
  const [bt, pt, it] = tables.map(rows) as [Record<string, Json>[], Record<string, Json>[], Record<string, Json>[]];

  const ifaceByUuid = new Map<string, OvsInterface>();
  const ifaces = new Map<string, OvsInterface>();
  for (const i of it) {
    const iface: OvsInterface = {
      name: String(i.name), type: String(i.type ?? ''), ofport: asOptInt(i.ofport), externalIds: asMap(i.external_ids),
    };
    ifaceByUuid.set(asUuid(i._uuid), iface);
    ifaces.set(iface.name, iface);
  }
  const portByUuid = new Map<string, Record<string, Json>>();
  for (const p of pt) portByUuid.set(asUuid(p._uuid), p);

  const bridges = new Map<string, OvsBridge>();
  const ports = new Map<string, OvsPort>();
  for (const b of bt) {
    const name = String(b.name);
    const bids = asMap(b.external_ids);
    bridges.set(name, { name, fake: false, parent: name, owned: bids.xenon === '1', datapathType: String(b.datapath_type ?? '') });
    const myPorts = asSet(b.ports).map((u) => portByUuid.get(asUuid(u))).filter((p): p is Record<string, Json> => !!p);
    const fakeByTag = new Map<number, string>();
    for (const p of myPorts) {
      if (p.fake_bridge === true) {
        const tag = asOptInt(p.tag);
        const pids = asMap(p.external_ids);
        bridges.set(String(p.name), {
          name: String(p.name), fake: true, parent: name, tag, owned: pids['fake-bridge-xenon'] === '1',
          datapathType: String(b.datapath_type ?? ''),
        });
        if (tag !== undefined) fakeByTag.set(tag, String(p.name));
      }
    }
    for (const p of myPorts) {
      const pname = String(p.name);
      if (p.fake_bridge === true || pname === name) continue;
      const tag = asOptInt(p.tag);
      const pids = asMap(p.external_ids);
      ports.set(pname, {
        name: pname,
        bridge: (tag !== undefined && fakeByTag.get(tag)) || name,
        realBridge: name,
        tag,
        owned: pids.xenon === '1',
        role: pids['xenon-role'],
        interfaces: asSet(p.interfaces).map((u) => ifaceByUuid.get(asUuid(u))?.name ?? '').filter(Boolean),
        externalIds: pids,
      });
    }
  }
  return { bridges, ports, ifaces };
}

/** Quote a string as an OVSDB atom for ovs-vsctl (JSON string syntax). */
export function ovsString(s: string): string {
  return JSON.stringify(s);
}
