/**
 * ova.xml both ways: the records of a VM and what it uses under archive ids
 * (`Ref:0`…) with xapi's version struct, and, on import, the objects read
 * back and the client-set fields a new record takes over.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { getClass } from '../datamodel/model.ts';
import { formatDateTime, NULL_REF, parseType, type XType } from '../datamodel/types.ts';
import { unmarshal, toXml } from '../wire/marshal.ts';
import { decodeValue, escapeXml } from '../wire/xmlrpc.ts';
import type { DbRecord } from '../db/store.ts';
import { openDiskSource, type DiskSource } from '../storage/xva/index.ts';
import type { Services } from './context.ts';
import { type Storage } from './sr-drivers.ts';

/** Inline checksums, no end-of-tar checksum table (xapi's Miami format). */
const EXPORT_VSN = 2;

export const refy = (t: XType): boolean => t.kind === 'ref' || (t.kind === 'set' && refy(t.of)) || (t.kind === 'map' && (refy(t.key) || refy(t.value)));

/** A value with references turned into archive ids (or NULL / dropped when not exported). */
function mapRefs(t: XType, v: unknown, id: (ref: string) => string): unknown {
  if (t.kind === 'ref') return id(String(v));
  if (t.kind === 'set' && refy(t.of)) return (v as unknown[]).map((x) => mapRefs(t.of, x, id)).filter((x) => x !== NULL_REF);
  if (t.kind === 'map' && refy(t) && v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      const key = String(mapRefs(t.key, k, id));
      if (key !== NULL_REF) out[key] = mapRefs(t.value, x, id);
    }
    return out;
  }
  return v;
}

function snapshotXml(cls: string, rec: DbRecord, id: (ref: string) => string, patch: Record<string, unknown>): string {
  const out: Record<string, unknown> = {};
  for (const f of getClass(cls)!.fields) out[f.name] = mapRefs(f.type, rec[f.name], id);
  Object.assign(out, patch);
  return toXml(parseType(`${cls} record`), out);
}

const member = (name: string, valueXml: string): string => `<member><name>${escapeXml(name)}</name>${valueXml}</member>`;
const str = (s: string): string => `<value>${escapeXml(s)}</value>`;
const int = (n: number): string => `<value><int>${Math.trunc(n)}</int></value>`;

function versionXml(services: Services): string {
  const host = services.store.must('host', services.hostRef());
  const sv = host.software_version as Record<string, string>;
  return `<value><struct>${[
    member('hostname', str(String(host.hostname))),
    member('date', str(sv.date ?? formatDateTime(new Date()).slice(0, 8))),
    member('product_version', str(sv.product_version ?? '0.1.0')),
    member('product_brand', str(sv.product_brand ?? 'Xenon')),
    member('build_number', str(sv.build_number ?? '')),
    member('xapi_major', int(Number(host.API_version_major) || 2)),
    member('xapi_minor', int(Number(host.API_version_minor) || 0)),
    member('export_vsn', int(EXPORT_VSN)),
  ].join('')}</struct></value>`;
}

export interface ExportDisk {
  prefix: string;
  vdi: string;
  src: DiskSource;
  size: number;
}

/**
 * ova.xml for one VM, and the disks to stream after it. Ids are given in
 * xapi's walk order: the VM, each VIF and its network, each VBD with its
 * VDI and that VDI's SR.
 */
export async function exportPlan(services: Services, storage: Storage, vmRef: string): Promise<{ xml: string; disks: ExportDisk[] }> {
  const { store } = services;
  const vm = store.must('VM', vmRef);
  const table = new Map<string, string>();
  const add = (r: unknown): void => {
    const ref = String(r);
    if (ref !== NULL_REF && !table.has(ref)) table.set(ref, `Ref:${table.size}`);
  };
  add(vmRef);
  const vifs = (vm.VIFs as string[]).filter((r) => store.get('VIF', r));
  for (const r of vifs) {
    add(r);
    if (store.get('network', String(store.must('VIF', r).network))) add(store.must('VIF', r).network);
  }
  const vbds = (vm.VBDs as string[]).filter((r) => store.get('VBD', r));
  for (const r of vbds) {
    add(r);
    const vbd = store.must('VBD', r);
    const vdi = store.get('VDI', String(vbd.VDI));
    if (vbd.empty !== true && vdi) {
      add(vbd.VDI);
      add(vdi.SR);
    }
  }
  const id = (ref: string): string => table.get(ref) ?? NULL_REF;
  const ofClass = (cls: string): string[] => [...table.keys()].filter((r) => store.getAny(cls, r));

  // the disks to stream: not CDs, not on ISO SRs (as xapi); opened now so that ova.xml states their true sizes
  const disks: ExportDisk[] = [];
  try {
    for (const r of vbds) {
      const vbd = store.must('VBD', r);
      const vdi = store.get('VDI', String(vbd.VDI));
      if (vbd.type === 'CD' || vbd.empty === true || !vdi || disks.some((d) => d.vdi === vbd.VDI)) continue;
      if (store.get('SR', String(vdi.SR))?.content_type === 'iso') continue;
      const driver = storage.imageDriver(String(vdi.SR));
      const info = await driver.info(String(vdi.uuid));
      const src = await openDiskSource(driver.path(String(vdi.uuid)), info.format);
      disks.push({ prefix: id(String(vbd.VDI)), vdi: String(vbd.VDI), src, size: src.size });
    }
  } catch (e) {
    for (const d of disks) await d.src.close().catch(() => undefined);
    throw e;
  }
  const sizeOf = new Map(disks.map((d) => [d.vdi, d.size]));

  const never = { current_operations: {}, allowed_operations: [] };
  const objects: string[] = [];
  const obj = (cls: string, ref: string, patch: Record<string, unknown>): void => {
    objects.push(`<value><struct>${member('class', str(cls))}${member('id', str(id(ref)))}${member('snapshot', snapshotXml(cls, store.mustAny(cls, ref), id, patch))}</struct></value>`);
  };
  for (const r of ofClass('VM')) {
    obj('VM', r, {
      ...never, power_state: 'Halted', suspend_VDI: NULL_REF, is_a_snapshot: false, snapshot_of: NULL_REF, snapshots: [], snapshot_time: '19700101T00:00:00Z',
      transportable_snapshot_id: '', parent: NULL_REF, children: [], crash_dumps: [], consoles: [], metrics: NULL_REF, guest_metrics: NULL_REF, blobs: [], resident_on: NULL_REF,
      scheduled_to_be_resident_on: NULL_REF, protection_policy: NULL_REF, domid: -1,
    });
  }
  for (const r of ofClass('VBD')) obj('VBD', r, { ...never, currently_attached: false, metrics: NULL_REF });
  for (const r of ofClass('VIF')) obj('VIF', r, { ...never, currently_attached: false, metrics: NULL_REF });
  for (const r of ofClass('network')) obj('network', r, { ...never, PIFs: [] });
  for (const r of ofClass('VDI')) obj('VDI', r, { ...never, crash_dumps: [], ...(sizeOf.has(r) ? { virtual_size: sizeOf.get(r) } : {}) });
  for (const r of ofClass('SR')) obj('SR', r, { ...never, PBDs: [] });
  const xml = `<value><struct>${member('version', versionXml(services))}${member('objects', `<value><array><data>${objects.join('')}</data></array></value>`)}</struct></value>`;
  return { xml, disks };
}

export interface Obj {
  cls: string;
  id: string;
  snapshot: Record<string, unknown>;
}

export function parseHeader(xml: string): Obj[] {
  let v: unknown;
  try {
    v = decodeValue(xml.replace(/^\s*<\?xml[^>]*\?>/, ''));
  } catch (e) {
    throw new XenApiError('IMPORT_ERROR', `ova.xml is not XML-RPC: ${(e as Error).message}`);
  }
  const h = v as { version?: unknown; objects?: unknown };
  if (!h || typeof h !== 'object' || !Array.isArray(h.objects) || typeof h.version !== 'object') {
    throw new XenApiError('IMPORT_ERROR', 'ova.xml is not an XVA header (a struct with version and objects): old-style XVAs are not supported');
  }
  return h.objects.map((o) => {
    const x = o as { class?: unknown; id?: unknown; snapshot?: unknown };
    if (typeof x?.class !== 'string' || typeof x.id !== 'string' || !x.snapshot || typeof x.snapshot !== 'object') throw new XenApiError('IMPORT_ERROR', 'ova.xml: malformed object');
    return { cls: x.class, id: x.id, snapshot: x.snapshot as Record<string, unknown> };
  });
}

/** The fields a new record takes over from an exported one: everything set by clients, no references. */
export function configFields(cls: string, snap: Record<string, unknown>, skip: readonly string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of getClass(cls)!.fields) {
    if (f.qualifier === 'RO/runtime' || f.name === 'uuid' || refy(f.type) || skip.includes(f.name) || !(f.name in snap)) continue;
    try {
      out[f.name] = unmarshal(f.type, snap[f.name], f.name);
    } catch {
      // a value this toolstack cannot hold (an enum of a newer xapi…): the default will do
    }
  }
  return out;
}
