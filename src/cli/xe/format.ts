/**
 * The datamodel as xe shows it: class and field names with hyphens, refs as
 * the uuids they point to, maps as `k: v; k2: v2`, sets as `a; b`, and
 * records as xe's aligned `name ( RW): value` blocks.
 */
import { enumValues, getClass, MODEL, type ModelClass, type ModelField } from '../../datamodel/model.ts';
import type { XType } from '../../datamodel/types.ts';
import type { XenApiClient } from '../../client/client.ts';
import { callByName, CliError } from './conn.ts';

export const NULL_REF = 'OpaqueRef:NULL';
export const NOT_IN_DB = '<not in database>';

/** `VM_guest_metrics` → `vm-guest-metrics`. */
export function xeClassName(cls: string): string {
  return cls.toLowerCase().replace(/_/g, '-');
}

/** Classes that xe's generic commands apply to: those with get_all_records. */
export const LISTABLE: readonly ModelClass[] = MODEL.filter((c) => c.decl.accessors && c.decl.getAll && c.messages.has('get_all_records'));

/** A pseudo-class of xe: a class plus fixed filters (vm, template, snapshot). */
export interface XeClass {
  readonly name: string;
  readonly cls: ModelClass;
  readonly filters: readonly (readonly [string, string])[];
}

export const XE_CLASSES: readonly XeClass[] = (() => {
  const out: XeClass[] = [];
  for (const c of LISTABLE) {
    if (c.name === 'VM') {
      out.push({ name: 'vm', cls: c, filters: [['is-a-template', 'false']] });
      out.push({ name: 'template', cls: c, filters: [['is-a-template', 'true'], ['is-a-snapshot', 'false']] });
      out.push({ name: 'snapshot', cls: c, filters: [['is-a-snapshot', 'true']] });
    } else out.push({ name: xeClassName(c.name), cls: c, filters: [] });
  }
  return out;
})();

/**
 * xe's field name: hyphens for underscores; a ref to the class it is named
 * after is shown as that object's uuid, named `<class>-uuid` (VIF.VM → vm-uuid).
 */
export function xeFieldName(f: ModelField): string {
  if (f.type.kind === 'ref' && f.name.toLowerCase() === f.type.cls.toLowerCase()) return `${xeClassName(f.type.cls)}-uuid`;
  return f.name.replace(/_/g, '-');
}

/** Finds a field by xe name, by wire name, or by wire name with hyphens. */
export function findField(cls: ModelClass, name: string): ModelField | undefined {
  for (const f of cls.fields) if (xeFieldName(f) === name) return f;
  const wire = name.replace(/-/g, '_');
  for (const f of cls.fields) if (f.name === name || f.name === wire) return f;
  const lower = wire.toLowerCase();
  return cls.fields.find((f) => f.name.toLowerCase() === lower || xeFieldName(f).toLowerCase() === name.toLowerCase());
}

export function visibleFields(cls: ModelClass): ModelField[] {
  return cls.fields.filter((f) => f.lifecycle !== 'removed');
}

/** Writable from xe: an RW field, or one with an explicit `set_<field>` message. */
export function writable(cls: ModelClass, f: ModelField): boolean {
  return f.qualifier === 'RW' || cls.messages.has(`set_${f.name}`);
}

/** `( RO)`, `( RW)`, `(MRO)`, `(MRW)`, `(SRO)`, `(SRW)`. */
export function qualifier(cls: ModelClass, f: ModelField): string {
  const kind = f.type.kind === 'map' ? 'M' : f.type.kind === 'set' ? 'S' : ' ';
  return `(${kind}${writable(cls, f) ? 'RW' : 'RO'})`;
}

/** Maps refs to uuids (and names, for error messages), fetching what it needs in bulk. */
export class Resolver {
  private readonly uuids = new Map<string, string>();
  private readonly names = new Map<string, string>();
  private readonly loaded = new Set<string>();

  constructor(private readonly client: XenApiClient) {}

  /** Records already known (from a list) seed the cache. */
  seed(cls: string, records: Record<string, Record<string, unknown>>): void {
    for (const [ref, r] of Object.entries(records)) {
      if (typeof r.uuid === 'string') this.uuids.set(ref, r.uuid);
      if (typeof r.name_label === 'string') this.names.set(ref, r.name_label);
    }
    this.loaded.add(cls);
  }

  /** Loads the uuids of every ref of these types found in these records. */
  async prefetch(cls: ModelClass, records: readonly Record<string, unknown>[]): Promise<void> {
    const wanted = new Map<string, Set<string>>();
    const collect = (t: XType, v: unknown): void => {
      if (t.kind === 'ref') {
        if (typeof v === 'string' && v !== NULL_REF && !this.uuids.has(v)) {
          let s = wanted.get(t.cls);
          if (!s) wanted.set(t.cls, (s = new Set()));
          s.add(v);
        }
      } else if (t.kind === 'set' && Array.isArray(v)) for (const x of v) collect(t.of, x);
      else if (t.kind === 'map' && v && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) {
          collect(t.key, k);
          collect(t.value, x);
        }
      }
    };
    for (const r of records) for (const f of cls.fields) collect(f.type, r[f.name]);
    await Promise.all([...wanted].map(([c, refs]) => this.load(c, refs)));
  }

  private async load(clsName: string, refs: Set<string>): Promise<void> {
    const cls = getClass(clsName);
    if (cls && !this.loaded.has(clsName) && (refs.size > 3 || cls.name === 'VM') && LISTABLE.includes(cls)) {
      this.loaded.add(clsName);
      try {
        this.seed(clsName, (await callByName(this.client, clsName, 'get_all_records')) as Record<string, Record<string, unknown>>);
        return;
      } catch {
        // fall back to one call per ref
      }
    }
    await Promise.all([...refs].filter((r) => !this.uuids.has(r)).map(async (ref) => {
      try {
        this.uuids.set(ref, (await callByName(this.client, clsName, 'get_uuid', ref)) as string);
      } catch {
        this.uuids.set(ref, NOT_IN_DB);
      }
    }));
  }

  uuid(ref: string): string {
    if (ref === NULL_REF || ref === '') return NOT_IN_DB;
    return this.uuids.get(ref) ?? ref;
  }

  name(ref: string): string | undefined {
    return this.names.get(ref);
  }

  /** For error messages: an OpaqueRef of unknown class → `uuid (name)` where it can. */
  async describe(ref: string, hint?: string): Promise<string> {
    if (!ref.startsWith('OpaqueRef:') || ref === NULL_REF) return ref;
    const hinted = hint ? MODEL.find((c) => c.name.toLowerCase() === hint.toLowerCase()) : undefined;
    const order = ['VM', 'host', 'SR', 'VDI', 'VBD', 'VIF', 'network', 'PIF', 'PBD', 'pool', 'task', 'console', 'VLAN'];
    const candidates = [...(hinted ? [hinted.name] : []), ...order.filter((c) => c !== hinted?.name)];
    for (const c of candidates) {
      try {
        const uuid = (await callByName(this.client, c, 'get_uuid', ref)) as string;
        const cls = getClass(c);
        let name: string | undefined;
        if (cls?.hasField('name_label')) name = (await callByName(this.client, c, 'get_name_label', ref).catch(() => undefined)) as string | undefined;
        return name ? `${uuid} (${name})` : uuid;
      } catch {
        // not of this class
      }
    }
    return ref;
  }
}

/** One value as xe prints it. */
export function formatValue(t: XType, v: unknown, res: Resolver): string {
  switch (t.kind) {
    case 'ref': return res.uuid(String(v ?? ''));
    case 'enum': return String(v ?? '').toLowerCase();
    case 'bool': return v === true || v === 'true' ? 'true' : 'false';
    case 'set': return Array.isArray(v) ? v.map((x) => formatValue(t.of, x, res)).join('; ') : '';
    case 'map':
      return v && typeof v === 'object' ? Object.entries(v).map(([k, x]) => `${formatValue(t.key, k, res)}: ${formatValue(t.value, x, res)}`).join('; ') : '';
    case 'record': case 'any': return JSON.stringify(v);
    default: return v === undefined || v === null ? '' : String(v);
  }
}

/** Parses what the user typed into a value of this type, for a setter. */
export async function parseValue(t: XType, text: string, client: XenApiClient, what: string): Promise<unknown> {
  switch (t.kind) {
    case 'string': case 'datetime': return text;
    case 'int': {
      const n = Number(text);
      if (!Number.isInteger(n)) throw new CliError(`Failed to parse '${text}' as an integer for ${what}`);
      return n;
    }
    case 'float': {
      const n = Number(text);
      if (Number.isNaN(n)) throw new CliError(`Failed to parse '${text}' as a number for ${what}`);
      return n;
    }
    case 'bool': {
      const b = text.toLowerCase();
      if (b === 'true' || b === 'yes' || b === '1' || b === 'on') return true;
      if (b === 'false' || b === 'no' || b === '0' || b === 'off') return false;
      throw new CliError(`Failed to parse '${text}' as a bool for ${what}`);
    }
    case 'enum': {
      const vals = enumValues(t.name) ?? [];
      const hit = vals.find((v) => v.toLowerCase() === text.toLowerCase());
      if (!hit) throw new CliError(`Unknown value '${text}' for ${what}: expected one of ${vals.join(', ')}`);
      return hit;
    }
    case 'ref': {
      if (text === '' || text === NOT_IN_DB || text === NULL_REF) return NULL_REF;
      if (text.startsWith('OpaqueRef:')) return text;
      return callByName(client, t.cls, 'get_by_uuid', text);
    }
    case 'set': {
      const items = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
      return Promise.all(items.map((s) => parseValue(t.of, s, client, what)));
    }
    case 'map': {
      const out: Record<string, unknown> = {};
      for (const part of text.split(/[;,]/).map((s) => s.trim()).filter(Boolean)) {
        const i = part.search(/[:=]/);
        if (i < 0) throw new CliError(`Failed to parse '${part}' as key: value for ${what}`);
        out[part.slice(0, i).trim()] = await parseValue(t.value, part.slice(i + 1).trim(), client, what);
      }
      return out;
    }
    default: return text;
  }
}

/** xe's record block: first key left-aligned, the rest right-aligned, to the longest + 4. */
export function recordBlock(pairs: readonly (readonly [string, string])[]): string {
  if (pairs.length === 0) return '\n';
  const width = 4 + Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v], i) => `${i === 0 ? k.padEnd(width) : k.padStart(width)}: ${v}`).join('\n') + '\n';
}

/** Records printed one after another, each followed by two blank lines, as xe does. */
export function printRecords(out: (s: string) => void, records: readonly (readonly (readonly [string, string])[])[]): void {
  for (const r of records) out(recordBlock(r) + '\n\n');
}

/** Escapes commas in --minimal output, as xe does. */
export function escapeMinimal(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/,/g, '\\,');
}

/** Sizes as xe accepts them: plain bytes or with a KiB/MiB/GiB/TiB (or K/M/G/T) suffix. */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?)?$/i.exec(text.trim());
  if (!m) throw new CliError(`Failed to parse '${text}' as a size for ${what}`);
  const mult: Record<string, number> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };
  const unit = m[2] ? mult[m[2][0].toUpperCase()] : 1;
  return Math.round(Number(m[1]) * unit);
}
