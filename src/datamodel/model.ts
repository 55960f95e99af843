/**
 * The datamodel as the rest of Xenon uses it: classes with parsed field types,
 * and every message — explicit ones from the class files plus the generic ones
 * derived here from the fields.
 */
import { CLASSES } from './classes/index.ts';
import { ENUMS } from './enums.ts';
import { expandRoles, type ClassDecl, type FieldDecl, type Lifecycle, type ParamDecl, type Qualifier, type Role, type RoleSpec } from './dsl.ts';
import { parseType, zeroValue, type XType } from './types.ts';

export type GenericKind =
  | 'get_record' | 'get_by_uuid' | 'get_by_name_label' | 'get_all' | 'get_all_records' | 'get_all_records_where'
  | 'get_field' | 'set_field' | 'add_to_map' | 'remove_from_map' | 'add_to_set' | 'remove_from_set'
  | 'create' | 'destroy';

export interface ModelParam {
  readonly name: string;
  readonly typeText: string;
  readonly type: XType;
  /** Set when a caller may leave the parameter out (xapi's param_default). */
  readonly default?: { readonly value: unknown };
}

export interface ModelMessage {
  readonly cls: string;
  readonly name: string;
  /** `Class.name`, as called on the wire. */
  readonly wireName: string;
  readonly params: readonly ModelParam[];
  /** The fewest parameters a caller may send (session not counted): those before the first default. */
  readonly minParams: number;
  readonly resultText: string;
  readonly result: XType;
  readonly roles: readonly Role[];
  readonly session: boolean;
  readonly async: boolean;
  readonly lifecycle: Lifecycle;
  /** Set for messages derived from the fields. */
  readonly generic?: { readonly kind: GenericKind; readonly field?: string };
  /** Hidden from system.listMethods and the reference (xapi's internal extras). */
  readonly hidden: boolean;
  /** A Xenon addition, not part of xapi's API. */
  readonly extension: boolean;
}

export interface ModelField {
  readonly name: string;
  readonly typeText: string;
  readonly type: XType;
  readonly qualifier: Qualifier;
  readonly defaultValue: unknown;
  readonly lifecycle: Lifecycle;
}

export interface ModelClass {
  readonly name: string;
  readonly decl: ClassDecl;
  readonly fields: readonly ModelField[];
  readonly fieldsByName: ReadonlyMap<string, ModelField>;
  readonly messages: ReadonlyMap<string, ModelMessage>;
  readonly hasField: (name: string) => boolean;
}

const cloneValue = (v: unknown): unknown => (v === null || typeof v !== 'object' ? v : structuredClone(v));

function modelField(f: FieldDecl): ModelField {
  const type = parseType(f.type);
  const zero = zeroValue(type, (name) => ENUMS[name]?.[0] ?? '');
  return {
    name: f.name,
    typeText: f.type,
    type,
    qualifier: f.qualifier,
    defaultValue: f.default === undefined ? zero : cloneValue(f.default),
    lifecycle: f.lifecycle ?? 'published',
  };
}

interface Draft {
  name: string;
  params: string[]; // "type name"
  result: string;
  roles: RoleSpec;
  async?: boolean;
  lifecycle?: Lifecycle;
  generic: { kind: GenericKind; field?: string };
  hidden?: boolean;
}

function derive(c: ClassDecl): Draft[] {
  if (!c.accessors) return [];
  const self = `${c.name} ref self`;
  const out: Draft[] = [
    { name: 'get_record', params: [self], result: `${c.name} record`, roles: c.read, generic: { kind: 'get_record' } },
    { name: 'get_by_uuid', params: ['string uuid'], result: `${c.name} ref`, roles: c.read, generic: { kind: 'get_by_uuid' } },
  ];
  if (c.getAll) {
    out.push(
      { name: 'get_all', params: [], result: `${c.name} ref set`, roles: c.read, generic: { kind: 'get_all' } },
      { name: 'get_all_records', params: [], result: `(${c.name} ref -> ${c.name} record) map`, roles: c.read, generic: { kind: 'get_all_records' } },
      { name: 'get_all_records_where', params: ['string expr'], result: `(${c.name} ref -> ${c.name} record) map`, roles: c.read, generic: { kind: 'get_all_records_where' }, hidden: true },
    );
  }
  if (c.byNameLabel) out.push({ name: 'get_by_name_label', params: ['string label'], result: `${c.name} ref set`, roles: c.read, generic: { kind: 'get_by_name_label' } });
  if (c.ctor) {
    out.push(
      { name: 'create', params: [`${c.name} record args`], result: `${c.name} ref`, roles: c.ctor, async: true, generic: { kind: 'create' } },
      { name: 'destroy', params: [self], result: 'void', roles: c.ctor, async: true, generic: { kind: 'destroy' } },
    );
  }
  for (const f of c.fields) {
    const lifecycle = f.lifecycle;
    out.push({ name: `get_${f.name}`, params: [self], result: f.type, roles: f.read ?? c.read, lifecycle, generic: { kind: 'get_field', field: f.name } });
    if (f.qualifier !== 'RW') continue;
    const w = f.write ?? c.write;
    const t = parseType(f.type);
    out.push({ name: `set_${f.name}`, params: [self, `${f.type} value`], result: 'void', roles: w, lifecycle, generic: { kind: 'set_field', field: f.name } });
    if (t.kind === 'map') {
      const k = f.type.slice(1, f.type.lastIndexOf(' -> ')).trim();
      const v = f.type.slice(f.type.lastIndexOf(' -> ') + 4, f.type.lastIndexOf(')')).trim();
      out.push(
        { name: `add_to_${f.name}`, params: [self, `${k} key`, `${v} value`], result: 'void', roles: w, lifecycle, generic: { kind: 'add_to_map', field: f.name } },
        { name: `remove_from_${f.name}`, params: [self, `${k} key`], result: 'void', roles: w, lifecycle, generic: { kind: 'remove_from_map', field: f.name } },
      );
    } else if (t.kind === 'set') {
      const of = f.type.slice(0, -4);
      out.push(
        { name: `add_${f.name}`, params: [self, `${of} value`], result: 'void', roles: w, lifecycle, generic: { kind: 'add_to_set', field: f.name } },
        { name: `remove_${f.name}`, params: [self, `${of} value`], result: 'void', roles: w, lifecycle, generic: { kind: 'remove_from_set', field: f.name } },
      );
    }
  }
  return out;
}

function toParams(decls: readonly ParamDecl[]): ModelParam[] {
  return decls.map((p) => ({
    name: p.name,
    typeText: p.type,
    type: parseType(p.type),
    ...(p.default === undefined ? {} : { default: { value: p.default } }),
  }));
}

const minParams = (params: readonly ModelParam[]): number => {
  const first = params.findIndex((p) => p.default !== undefined);
  return first < 0 ? params.length : first;
};

function buildClass(c: ClassDecl): ModelClass {
  const fields = c.fields.map(modelField);
  const messages = new Map<string, ModelMessage>();
  for (const d of derive(c)) {
    const params = d.params.map((p) => {
      const cut = p.lastIndexOf(' ');
      return { type: p.slice(0, cut), name: p.slice(cut + 1) };
    });
    messages.set(d.name, {
      cls: c.name,
      name: d.name,
      wireName: `${c.name}.${d.name}`,
      params: toParams(params),
      minParams: params.length,
      resultText: d.result,
      result: parseType(d.result),
      roles: expandRoles(d.roles),
      session: true,
      async: d.async ?? false,
      lifecycle: d.lifecycle ?? 'published',
      generic: d.generic,
      hidden: d.hidden ?? false,
      extension: false,
    });
  }
  for (const m of c.messages) {
    // an explicit message overrides a derived one of the same name
    const params = toParams(m.params);
    messages.set(m.name, {
      cls: c.name,
      name: m.name,
      wireName: `${c.name}.${m.name}`,
      params,
      minParams: minParams(params),
      resultText: m.result,
      result: parseType(m.result),
      roles: expandRoles(m.roles),
      session: m.session,
      async: m.async,
      lifecycle: m.lifecycle,
      hidden: false,
      extension: m.extension,
    });
  }
  const fieldsByName = new Map(fields.map((f) => [f.name, f]));
  return { name: c.name, decl: c, fields, fieldsByName, messages, hasField: (n) => fieldsByName.has(n) };
}

export const MODEL: readonly ModelClass[] = CLASSES.map(buildClass);
const byName = new Map(MODEL.map((c) => [c.name, c]));
const byLowerName = new Map(MODEL.map((c) => [c.name.toLowerCase(), c]));

export function getClass(name: string): ModelClass | undefined {
  return byName.get(name);
}

/** xapi matches class names case-insensitively in event subscriptions and refs' class lookups. */
export function findClassInsensitive(name: string): ModelClass | undefined {
  return byName.get(name) ?? byLowerName.get(name.toLowerCase());
}

export function enumValues(name: string): readonly string[] | undefined {
  return ENUMS[name];
}

/** Every message, keyed by its wire name `Class.message`. */
export const MESSAGES: ReadonlyMap<string, ModelMessage> = new Map(
  MODEL.flatMap((c) => [...c.messages.values()].map((m) => [m.wireName, m] as const)),
);

/**
 * Every message by the names a caller may use: `Class.message` and, as xapi
 * also accepts, `Class_message` (the Python binding sends `event_from`, as
 * `from` is a keyword there).
 */
const CALLABLE: ReadonlyMap<string, ModelMessage> = new Map(
  [...MESSAGES.values()].flatMap((m) => [[m.wireName, m], [`${m.cls}_${m.name}`, m]] as const),
);

export function findMessage(name: string): ModelMessage | undefined {
  return CALLABLE.get(name);
}

/** A fresh record of a class with every field at its default. */
export function defaultRecord(cls: ModelClass): Record<string, unknown> {
  const r: Record<string, unknown> = {};
  for (const f of cls.fields) r[f.name] = cloneValue(f.defaultValue);
  return r;
}
