/**
 * Who may read what, from the datamodel's read roles: a class's `read`, a
 * field's `read` (e.g. a secret's value) and `ownerOnly` classes (a session
 * is seen by itself alone: its reference is its credential). Every read path
 * — the generic getters and records, event.from/next — goes through here, so
 * the rule is declared once, as data, for every class.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { expandRoles, type Role } from '../datamodel/dsl.ts';
import { getClass, MODEL, type ModelClass, type ModelMessage } from '../datamodel/model.ts';
import type { DbRecord } from '../db/store.ts';

/** The caller, as far as reading goes. */
export interface Reader {
  readonly ref: string;
  readonly roles: ReadonlySet<Role>;
  readonly isLocalSuperuser: boolean;
}

interface ClassRule {
  readonly read: readonly Role[];
  readonly ownerOnly: boolean;
  /** Fields whose read roles differ from the class's, with their roles and hidden value. */
  readonly fields: readonly { readonly name: string; readonly read: readonly Role[]; readonly hidden: unknown }[];
}

function ruleOf(c: ModelClass): ClassRule {
  const fields = c.decl.fields
    .filter((f) => f.read !== undefined && f.read !== c.decl.read)
    .map((f) => ({ name: f.name, read: expandRoles(f.read!), hidden: c.fieldsByName.get(f.name)!.defaultValue }));
  return { read: expandRoles(c.decl.read), ownerOnly: c.decl.ownerOnly === 'self', fields };
}

const RULES: ReadonlyMap<string, ClassRule> = new Map(MODEL.map((c) => [c.name, ruleOf(c)]));

const holds = (reader: Reader, roles: readonly Role[]): boolean =>
  reader.isLocalSuperuser || roles.some((r) => reader.roles.has(r));

/** Whether the caller may see this object at all. */
export function canSee(reader: Reader, cls: string, ref: string): boolean {
  const rule = RULES.get(cls);
  if (!rule) return false;
  if (rule.ownerOnly) return ref === reader.ref;
  return holds(reader, rule.read);
}

/** Whether the caller may read a field of a class (objects aside). */
export function canReadField(reader: Reader, cls: string, field: string): boolean {
  const rule = RULES.get(cls);
  if (!rule) return false;
  const special = rule.fields.find((f) => f.name === field);
  return holds(reader, special ? special.read : rule.read);
}

/**
 * The record as this caller may see it: undefined when the object is hidden,
 * fields the caller may not read set to their defaults. Unchanged (the same
 * object) in the common case, so cached encodings stay valid.
 */
export function readableRecord(reader: Reader, cls: string, ref: string, rec: DbRecord): DbRecord | undefined {
  if (!canSee(reader, cls, ref)) return undefined;
  const hidden = RULES.get(cls)!.fields.filter((f) => !holds(reader, f.read));
  if (hidden.length === 0) return rec;
  const copy: Record<string, unknown> = { ...rec };
  for (const f of hidden) copy[f.name] = f.hidden;
  return Object.freeze(copy);
}

function readableMap(reader: Reader, cls: string, map: Readonly<Record<string, DbRecord>>): Record<string, DbRecord> {
  const out: Record<string, DbRecord> = {};
  for (const [ref, rec] of Object.entries(map)) {
    const seen = readableRecord(reader, cls, ref, rec);
    if (seen) out[ref] = seen;
  }
  return out;
}

/** Field names a get_all_records_where expression tests (`field "name" = …`). */
function fieldsTested(expr: string): string[] {
  const out: string[] = [];
  for (const m of expr.matchAll(/\bfield\s*("(?:[^"\\]|\\.)*")/g)) {
    try {
      out.push(String(JSON.parse(m[1])));
    } catch {
      // the query compiler reports malformed expressions itself
    }
  }
  return out;
}

/**
 * Runs a generic message (getter, record, lookup, setter…) under the read
 * rules: an object the caller may not see does not exist for it, and what
 * comes back carries only what it may read.
 */
export function guardGeneric(reader: Reader, m: ModelMessage, args: Readonly<Record<string, unknown>>, run: () => unknown): unknown {
  const cls = m.cls;
  const self = args.self;
  if (typeof self === 'string' && !canSee(reader, cls, self)) throw new XenApiError('HANDLE_INVALID', cls, self);
  const kind = m.generic?.kind;
  if (kind === 'get_all_records_where') {
    const unreadable = fieldsTested(String(args.expr ?? '')).find((f) => getClass(cls)?.hasField(f) && !canReadField(reader, cls, f));
    if (unreadable) throw new XenApiError('RBAC_PERMISSION_DENIED', `${cls}.get_${unreadable}`.toLowerCase(), 'No permission in the role of this session to read this field');
  }
  const result = run();
  switch (kind) {
    case 'get_record':
      return readableRecord(reader, cls, String(self), result as DbRecord);
    case 'get_by_uuid':
      if (!canSee(reader, cls, String(result))) throw new XenApiError('UUID_INVALID', cls, String(args.uuid));
      return result;
    case 'get_all':
    case 'get_by_name_label':
      return (result as string[]).filter((ref) => canSee(reader, cls, ref));
    case 'get_all_records':
    case 'get_all_records_where':
      return readableMap(reader, cls, result as Record<string, DbRecord>);
    default:
      return result;
  }
}

/** How many objects of each persistent class the caller can see (event.from's valid_ref_counts). */
export function visibleCounts(reader: Reader, count: (cls: string) => number, exists: (cls: string, ref: string) => boolean): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of MODEL) {
    if (!c.decl.persistent) continue;
    const rule = RULES.get(c.name)!;
    if (rule.ownerOnly) out[c.name.toLowerCase()] = exists(c.name, reader.ref) ? 1 : 0;
    else if (holds(reader, rule.read)) out[c.name.toLowerCase()] = count(c.name);
  }
  return out;
}
