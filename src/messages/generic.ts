/**
 * The behaviour of every generic message, derived from the datamodel:
 * getters, setters, map and set mutators, lookups, create and destroy.
 * A class's own handler of the same name (messages/<class>.ts) wins over these.
 */
import { guardGeneric } from '../auth/read-access.ts';
import { XenApiError } from '../datamodel/api-error.ts';
import type { GenericKind, ModelMessage } from '../datamodel/model.ts';
import { getClass } from '../datamodel/model.ts';
import type { ClassName, Records } from '../datamodel/generated/records.ts';
import type { DbRecord, Patch, Store } from '../db/store.ts';
import type { Args, CallContext, Handler } from './context.ts';
import { compileWhere } from './where.ts';

type Generic = (store: Store, m: ModelMessage, args: Args) => unknown;

const recordsOf = (store: Store, cls: string, pred?: (r: DbRecord) => boolean): Record<string, DbRecord> => {
  const out: Record<string, DbRecord> = {};
  for (const [ref, rec] of store.allAny(cls)) if (!pred || pred(rec)) out[ref] = rec;
  return out;
};

const self = (args: Args): string => args.self as string;
const fieldOf = (m: ModelMessage): string => m.generic!.field!;

const GENERIC: Record<GenericKind, Generic> = {
  get_record: (store, m, args) => store.mustAny(m.cls, self(args)),
  get_by_uuid: (store, m, args) => {
    const ref = store.byUuid(m.cls, args.uuid as string);
    if (!ref) throw new XenApiError('UUID_INVALID', m.cls, args.uuid as string);
    return ref;
  },
  get_by_name_label: (store, m, args) => store.whereAny(m.cls, (r) => r.name_label === args.label).map(([ref]) => ref),
  get_all: (store, m) => store.refs(m.cls),
  get_all_records: (store, m) => recordsOf(store, m.cls),
  get_all_records_where: (store, m, args) => recordsOf(store, m.cls, compileWhere(args.expr as string)),
  get_field: (store, m, args) => store.mustAny(m.cls, self(args))[fieldOf(m)],
  set_field: (store, m, args) => {
    store.transact((tx) => tx.updateAny(m.cls, self(args), { [fieldOf(m)]: args.value }));
  },
  add_to_map: (store, m, args) => {
    const f = fieldOf(m);
    const cur = store.mustAny(m.cls, self(args))[f] as Record<string, unknown>;
    const key = args.key as string;
    if (Object.hasOwn(cur, key)) throw new XenApiError('MAP_DUPLICATE_KEY', m.cls, f, self(args), key);
    store.transact((tx) => tx.updateAny(m.cls, self(args), { [f]: { ...cur, [key]: args.value } }));
  },
  remove_from_map: (store, m, args) => {
    const f = fieldOf(m);
    const cur = store.mustAny(m.cls, self(args))[f] as Record<string, unknown>;
    const key = args.key as string;
    if (!Object.hasOwn(cur, key)) return; // removing a missing key succeeds, as in xapi
    const { [key]: _gone, ...rest } = cur;
    store.transact((tx) => tx.updateAny(m.cls, self(args), { [f]: rest }));
  },
  add_to_set: (store, m, args) => {
    const f = fieldOf(m);
    const cur = store.mustAny(m.cls, self(args))[f] as unknown[];
    if (cur.includes(args.value)) return;
    store.transact((tx) => tx.updateAny(m.cls, self(args), { [f]: [...cur, args.value] }));
  },
  remove_from_set: (store, m, args) => {
    const f = fieldOf(m);
    const cur = store.mustAny(m.cls, self(args))[f] as unknown[];
    if (!cur.includes(args.value)) return;
    store.transact((tx) => tx.updateAny(m.cls, self(args), { [f]: cur.filter((x) => x !== args.value) }));
  },
  create: (store, m, args) => store.transact((tx) => tx.createAny(m.cls, creatableFields(m.cls, args.args as Args))),
  destroy: (store, m, args) => {
    store.transact((tx) => tx.deleteAny(m.cls, self(args)));
  },
};

/** A create's record argument without the fields only the server writes (RO/runtime). */
export function creatable<C extends ClassName>(cls: C, given: Patch<C>): Patch<C> {
  const model = getClass(cls)!;
  const out: Partial<Record<string, unknown>> = {};
  for (const [k, v] of Object.entries(given)) if (model.fieldsByName.get(k)?.qualifier !== 'RO/runtime') out[k] = v;
  // the same object minus some of its keys
  return out as Patch<C>;
}

/** The fields of a create's record argument a client may set (RW and RO/constructor). */
export function creatableFields(cls: string, given: Args): Record<string, unknown> {
  const model = getClass(cls)!;
  const out: Record<string, unknown> = {};
  for (const f of model.fields) {
    if (f.qualifier === 'RO/runtime' || !Object.hasOwn(given, f.name)) continue;
    out[f.name] = given[f.name];
  }
  return out;
}

/**
 * An explicit `set_<field>` message whose whole behaviour is the write (xapi
 * declares some setters explicitly for their roles): its first parameter names
 * the object, `value` the new value.
 */
export function setField<C extends ClassName, F extends keyof Records[C] & string>(_cls: C, field: F): Handler<{ readonly value: Records[C][F] }, void> {
  return (ctx, args) => {
    const m = ctx.message;
    const named: Args = args; // the object is the message's own first parameter, whatever its name
    const self = named[m.params[0].name];
    if (typeof self !== 'string') throw new XenApiError('INTERNAL_ERROR', `${m.wireName}: no object to set`);
    ctx.services.store.transact((tx) => tx.updateAny(m.cls, self, { [field]: args.value }));
  };
}

export function runGeneric(ctx: CallContext, args: Args): unknown {
  const m = ctx.message;
  return guardGeneric(ctx.session, m, args, () => GENERIC[m.generic!.kind](ctx.services.store, m, args));
}
