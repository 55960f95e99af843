/**
 * The master's half of pool.join: a pool-admin session (the joining host
 * logged in with the credentials pool.join was given) brings the joining
 * host's records; they are checked field by field against the datamodel and
 * written in one transaction — networks the pool already has (same bridge)
 * are shared rather than duplicated — and the pool secret is handed back.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { XenApiError } from '../datamodel/api-error.ts';
import { getClass } from '../datamodel/model.ts';
import { RELATIONS } from '../datamodel/relations.ts';
import type { Tx } from '../db/store.ts';
import type { Services } from '../messages/context.ts';
import { unmarshal } from '../wire/marshal.ts';
import { certificateDir } from './certs.ts';

export interface ImportedRow {
  readonly cls: string;
  readonly ref: string;
  readonly rec: Readonly<Record<string, unknown>>;
}

export interface JoinRequest {
  readonly records: readonly ImportedRow[];
  /** The joining host's TLS certificate (PEM): the master pins it for its calls to the member. */
  readonly certificate: string;
  readonly force: boolean;
}

/** What a joining host may bring, in the order it is written (owners before what points at them). */
const IMPORTABLE = ['network', 'host_metrics', 'host', 'host_cpu', 'PIF_metrics', 'PIF', 'VLAN', 'SR', 'PBD', 'VDI', 'VM_metrics', 'VM_guest_metrics', 'VM', 'VBD', 'VIF', 'console'] as const;
const MAX_ROWS = 100_000;
const REF = /^OpaqueRef:[0-9a-f-]{36}$/i;

const OWNER_SETS = new Map<string, Set<string>>();
for (const r of RELATIONS) OWNER_SETS.set(r.owner.cls, (OWNER_SETS.get(r.owner.cls) ?? new Set()).add(r.owner.field));


/** The request, checked: known classes, well-formed refs, every field of its declared type. */
export function checkJoinRequest(body: unknown): JoinRequest {
  const b = body as Partial<Record<keyof JoinRequest, unknown>> | null;
  if (!b || typeof b !== 'object' || !Array.isArray(b.records) || b.records.length > MAX_ROWS) throw new XenApiError('INVALID_VALUE', 'records', 'not a list of records');
  const cert = b.certificate;
  if (typeof cert !== 'string' || cert.length > 16_384 || !/^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?$/.test(cert)) {
    throw new XenApiError('INVALID_VALUE', 'certificate', 'not a PEM certificate');
  }
  const records = b.records.map((row: unknown): ImportedRow => {
    const r = row as Partial<Record<keyof ImportedRow, unknown>> | null;
    const cls = typeof r?.cls === 'string' && (IMPORTABLE as readonly string[]).includes(r.cls) ? getClass(r.cls) : undefined;
    if (!cls || typeof r?.ref !== 'string' || !REF.test(r.ref) || !r.rec || typeof r.rec !== 'object') throw new XenApiError('INVALID_VALUE', 'records', 'a record the join cannot take');
    const rec: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(r.rec)) {
      const f = cls.fieldsByName.get(k);
      if (f) rec[k] = unmarshal(f.type, v, `${cls.name}.${k}`);
    }
    return { cls: cls.name, ref: r.ref, rec };
  });
  if (records.filter((r) => r.cls === 'host').length !== 1) throw new XenApiError('INVALID_VALUE', 'records', 'exactly one host must join');
  return { records, certificate: cert, force: b.force === true };
}

/** Writes the joining host's records; returns its host ref. */
export function admitHost(services: Services, req: JoinRequest): string {
  const { store } = services;
  const host = req.records.find((r) => r.cls === 'host')!;
  // as xapi's pre_join_checks: no host joins a pool with HA on (its etcd members and plan are fixed)
  if (store.get('pool', services.poolRef())?.ha_enabled) throw new XenApiError('HA_IS_ENABLED');
  if (store.byUuid('host', String(host.rec.uuid))) throw new XenApiError('HOST_IS_LIVE', host.ref);
  // a network the pool has on the same bridge is the same network (xapi's create_or_get_network_on_master)
  const renamed = new Map<string, string>();
  for (const r of req.records) {
    if (r.cls !== 'network') continue;
    const same = store.where('network', (n) => n.bridge === r.rec.bridge)[0];
    if (same) renamed.set(r.ref, same[0]);
  }
  const imported = new Set(req.records.map((r) => r.ref));
  const mapRef = (v: unknown): unknown => (typeof v === 'string' && renamed.has(v) ? renamed.get(v) : v);
  const order = (cls: string): number => IMPORTABLE.indexOf(cls as (typeof IMPORTABLE)[number]);
  const rows = [...req.records].sort((a, b) => order(a.cls) - order(b.cls));
  store.transact((tx: Tx) => {
    for (const r of rows) {
      if (renamed.has(r.ref)) continue;
      const owned = OWNER_SETS.get(r.cls) ?? new Set<string>();
      const fields: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(r.rec)) {
        // sets kept from the other side are rebuilt here, as the children arrive
        fields[k] = owned.has(k) && Array.isArray(v) ? v.filter((x) => imported.has(String(x)) && !renamed.has(String(x))) : mapRef(v);
      }
      tx.createAny(r.cls, fields, r.ref);
    }
    // the pool's shared SRs: a PBD for the newcomer, as the others have (plugged once it runs as a member)
    for (const [sr, rec] of store.where('SR', (s) => s.shared)) {
      const model = rec.PBDs.map((p) => tx.get('PBD', p)).find((p) => p !== undefined && p.host !== host.ref);
      if (model) tx.create('PBD', { host: host.ref, SR: sr, device_config: model.device_config, currently_attached: false });
    }
  });
  mkdirSync(certificateDir(services.dataDir), { recursive: true, mode: 0o700 });
  writeFileSync(join(certificateDir(services.dataDir), `${String(host.rec.uuid)}.pem`), req.certificate, { mode: 0o600 });
  return host.ref;
}
