/**
 * xe's generic commands, made at run time for every class of the datamodel:
 * <class>-list and <class>-param-{list,get,set,add,remove,clear}.
 */
import type { ModelClass, ModelField } from '../../datamodel/model.ts';
import { callByName, CliError } from './conn.ts';
import { type Command, type Ctx, flag, param, reqParam, STD_PARAMS } from './context.ts';
import { escapeMinimal, findField, formatValue, parseValue, printRecords, qualifier, visibleFields, writable, XE_CLASSES, xeFieldName, type XeClass } from './format.ts';

type Rec = Record<string, unknown>;

/** What `<class>-list` shows without params= (xe's choices, where it has them). */
const DEFAULT_LIST: Record<string, readonly string[]> = {
  vm: ['uuid', 'name-label', 'power-state'],
  template: ['uuid', 'name-label', 'name-description'],
  snapshot: ['uuid', 'name-label', 'name-description', 'snapshot-of', 'snapshot-time'],
  pool: ['uuid', 'name-label', 'name-description', 'master', 'default-SR'],
  pif: ['uuid', 'device', 'VLAN', 'MAC', 'network-uuid', 'currently-attached', 'host-uuid'],
  vlan: ['uuid', 'tagged-PIF', 'untagged-PIF', 'tag'],
  vif: ['uuid', 'device', 'vm-uuid', 'network-uuid'],
  vbd: ['uuid', 'vm-uuid', 'vdi-uuid', 'device', 'empty'],
  vdi: ['uuid', 'name-label', 'name-description', 'virtual-size', 'read-only', 'sharable', 'sr-uuid'],
  network: ['uuid', 'name-label', 'name-description', 'bridge'],
  console: ['uuid', 'vm-uuid', 'protocol', 'location'],
  'host-cpu': ['uuid', 'number', 'vendor', 'speed', 'utilisation'],
  sr: ['uuid', 'name-label', 'name-description', 'type', 'content-type'],
  pbd: ['uuid', 'host-uuid', 'sr-uuid', 'device-config', 'currently-attached'],
  task: ['uuid', 'name-label', 'name-description', 'status', 'progress'],
  bond: ['uuid', 'master', 'slaves'],
  tunnel: ['uuid', 'transport-PIF', 'access-PIF', 'status'],
};

function defaultFields(xc: XeClass): ModelField[] {
  const names = DEFAULT_LIST[xc.name];
  const cls = xc.cls;
  if (names) return names.map((n) => findField(cls, n)).filter((f): f is ModelField => f !== undefined);
  const guess = ['uuid', 'name_label', 'name_description'].map((n) => cls.fieldsByName.get(n)).filter((f): f is ModelField => f !== undefined);
  return guess.length > 1 ? guess : visibleFields(cls);
}

/** The formatted value of `field` or `map-field:key` in a record, or undefined when there is no such field. */
export function fieldText(ctx: Ctx, cls: ModelClass, rec: Rec, name: string): string | undefined {
  const colon = name.indexOf(':');
  if (colon > 0) {
    const f = findField(cls, name.slice(0, colon));
    if (!f || f.type.kind !== 'map') return undefined;
    const v = (rec[f.name] as Record<string, unknown> | undefined)?.[name.slice(colon + 1)];
    return v === undefined ? '' : formatValue(f.type.value, v, ctx.res);
  }
  const f = findField(cls, name);
  return f ? formatValue(f.type, rec[f.name], ctx.res) : undefined;
}

/** Whether a record satisfies `field=value` (or `field=/=value` when `negate`). */
export function matches(ctx: Ctx, cls: ModelClass, rec: Rec, name: string, want: string): boolean {
  const negate = want.startsWith('/=');
  const value = negate ? want.slice(2) : want;
  const text = fieldText(ctx, cls, rec, name);
  if (text === undefined) throw new CliError(`Unknown field '${name}' of ${cls.name}`);
  const f = findField(cls, name.split(':')[0]);
  const eq = f?.type.kind === 'enum' || f?.type.kind === 'bool' ? text.toLowerCase() === value.toLowerCase() : text === value;
  return negate ? !eq : eq;
}

/** All records of a pseudo-class, with refs ready to print, filtered by `filters`. */
export async function selectRecords(ctx: Ctx, xc: XeClass, filters: readonly (readonly [string, string])[]): Promise<[string, Rec][]> {
  const all = (await callByName(ctx.client, xc.cls.name, 'get_all_records')) as Record<string, Rec>;
  ctx.res.seed(xc.cls.name, all);
  await ctx.res.prefetch(xc.cls, Object.values(all));
  const conds = [...xc.filters, ...filters];
  return Object.entries(all).filter(([, r]) => conds.every(([k, v]) => matches(ctx, xc.cls, r, k, v)));
}

/** The `field=value` filters among a command's parameters. */
export function filtersOf(ctx: Ctx, except: readonly string[] = []): [string, string][] {
  return [...ctx.params].filter(([k]) => !STD_PARAMS.includes(k) && !except.includes(k));
}

function fieldsToShow(ctx: Ctx, xc: XeClass, fallback: () => ModelField[]): ModelField[] {
  const p = param(ctx, 'params');
  if (p === undefined) return fallback();
  if (p === 'all') return visibleFields(xc.cls);
  return p.split(',').map((n) => n.trim()).filter(Boolean).map((n) => {
    const f = findField(xc.cls, n);
    if (!f) throw new CliError(`Unknown field '${n}' of ${xc.name}`);
    return f;
  });
}

/** Prints records as xe does: blocks, or with --minimal the first shown field of each, comma-separated. */
export function printTable(ctx: Ctx, xc: XeClass, recs: readonly Rec[], fields: readonly ModelField[]): void {
  if (flag(ctx, 'minimal')) {
    const first = fields[0];
    ctx.out(recs.map((r) => escapeMinimal(first ? formatValue(first.type, r[first.name], ctx.res) : '')).join(',') + '\n');
    return;
  }
  printRecords(ctx.out, recs.map((r) => fields.map((f) => [`${xeFieldName(f)} ${qualifier(xc.cls, f)}`, formatValue(f.type, r[f.name], ctx.res)] as const)));
}

async function recordByUuid(ctx: Ctx, xc: XeClass): Promise<{ ref: string; rec: Rec }> {
  const uuid = reqParam(ctx, 'uuid');
  const ref = (await callByName(ctx.client, xc.cls.name, 'get_by_uuid', uuid)) as string;
  const rec = (await callByName(ctx.client, xc.cls.name, 'get_record', ref)) as Rec;
  await ctx.res.prefetch(xc.cls, [rec]);
  return { ref, rec };
}

function paramField(xc: XeClass, name: string): ModelField {
  const f = findField(xc.cls, name);
  if (!f) throw new CliError(`Unknown field '${name}' of ${xc.name}`);
  return f;
}

function assertWritable(xc: XeClass, f: ModelField): void {
  if (!writable(xc.cls, f)) throw new CliError(`The field '${xeFieldName(f)}' of ${xc.name} is read-only`);
}

export function genericCommands(): Command[] {
  const out: Command[] = [];
  for (const xc of XE_CLASSES) {
    const C = xc.cls.name;
    out.push(
      {
        name: `${xc.name}-list`, reqd: [], optn: ['params'], freeParams: true,
        help: `Lists ${xc.name}s. params=a,b|all picks the fields shown; other field=value arguments filter the list.`,
        run: async (ctx) => {
          const recs = await selectRecords(ctx, xc, filtersOf(ctx));
          printTable(ctx, xc, recs.map(([, r]) => r), fieldsToShow(ctx, xc, () => defaultFields(xc)));
        },
      },
      {
        name: `${xc.name}-param-list`, reqd: ['uuid'], optn: [],
        help: `Lists every parameter of the ${xc.name} with this uuid.`,
        run: async (ctx) => {
          const { rec } = await recordByUuid(ctx, xc);
          printTable(ctx, xc, [rec], fieldsToShow(ctx, xc, () => visibleFields(xc.cls)));
        },
      },
      {
        name: `${xc.name}-param-get`, reqd: ['uuid', 'param-name'], optn: ['param-key'],
        help: `Prints one parameter of the ${xc.name} with this uuid (param-key= for one key of a map).`,
        run: async (ctx) => {
          const f = paramField(xc, reqParam(ctx, 'param-name'));
          const { rec } = await recordByUuid(ctx, xc);
          const key = param(ctx, 'param-key');
          if (key !== undefined) {
            if (f.type.kind !== 'map') throw new CliError(`The parameter '${xeFieldName(f)}' is not a map`);
            const m = (rec[f.name] ?? {}) as Record<string, unknown>;
            if (!(key in m)) throw new CliError(`Key ${key} not found in map`);
            ctx.out(formatValue(f.type.value, m[key], ctx.res) + '\n');
          } else ctx.out(formatValue(f.type, rec[f.name], ctx.res) + '\n');
        },
      },
      {
        name: `${xc.name}-param-set`, reqd: ['uuid'], optn: [], freeParams: true,
        help: `Sets parameters of the ${xc.name} with this uuid: field=value, map-field:key=value.`,
        run: async (ctx) => {
          const { ref } = await recordByUuid(ctx, xc);
          const sets = filtersOf(ctx, ['uuid']);
          if (sets.length === 0) throw new CliError('No parameters to set', true);
          for (const [k, v] of sets) {
            const colon = k.indexOf(':');
            if (colon > 0) {
              const f = paramField(xc, k.slice(0, colon));
              if (f.type.kind !== 'map') throw new CliError(`The parameter '${xeFieldName(f)}' is not a map`);
              if (!xc.cls.messages.has(`add_to_${f.name}`)) throw new CliError(`The map '${xeFieldName(f)}' of ${xc.name} is read-only`);
              const key = k.slice(colon + 1);
              await callByName(ctx.client, C, `remove_from_${f.name}`, ref, key);
              await callByName(ctx.client, C, `add_to_${f.name}`, ref, key, await parseValue(f.type.value, v, ctx.client, k));
            } else {
              const f = paramField(xc, k);
              assertWritable(xc, f);
              await callByName(ctx.client, C, `set_${f.name}`, ref, await parseValue(f.type, v, ctx.client, k));
            }
          }
        },
      },
      {
        name: `${xc.name}-param-add`, reqd: ['uuid', 'param-name'], optn: ['param-key'], freeParams: true,
        help: `Adds to a map (key=value …) or set (param-key=value) parameter of the ${xc.name} with this uuid.`,
        run: async (ctx) => {
          const f = paramField(xc, reqParam(ctx, 'param-name'));
          const { ref } = await recordByUuid(ctx, xc);
          if (f.type.kind === 'map') {
            if (!xc.cls.messages.has(`add_to_${f.name}`)) throw new CliError(`The map '${xeFieldName(f)}' of ${xc.name} is read-only`);
            const kvs = filtersOf(ctx, ['uuid', 'param-name', 'param-key']);
            for (const [k, v] of kvs) await callByName(ctx.client, C, `add_to_${f.name}`, ref, k, await parseValue(f.type.value, v, ctx.client, k));
          } else if (f.type.kind === 'set') {
            if (!xc.cls.messages.has(`add_${f.name}`)) throw new CliError(`The set '${xeFieldName(f)}' of ${xc.name} is read-only`);
            await callByName(ctx.client, C, `add_${f.name}`, ref, await parseValue(f.type.of, reqParam(ctx, 'param-key'), ctx.client, 'param-key'));
          } else throw new CliError(`The parameter '${xeFieldName(f)}' is neither a map nor a set`);
        },
      },
      {
        name: `${xc.name}-param-remove`, reqd: ['uuid', 'param-name', 'param-key'], optn: [],
        help: `Removes a key of a map or a member of a set parameter of the ${xc.name} with this uuid.`,
        run: async (ctx) => {
          const f = paramField(xc, reqParam(ctx, 'param-name'));
          const key = reqParam(ctx, 'param-key');
          const { ref } = await recordByUuid(ctx, xc);
          if (f.type.kind === 'map') {
            if (!xc.cls.messages.has(`remove_from_${f.name}`)) throw new CliError(`The map '${xeFieldName(f)}' of ${xc.name} is read-only`);
            await callByName(ctx.client, C, `remove_from_${f.name}`, ref, key);
          } else if (f.type.kind === 'set') {
            if (!xc.cls.messages.has(`remove_${f.name}`)) throw new CliError(`The set '${xeFieldName(f)}' of ${xc.name} is read-only`);
            await callByName(ctx.client, C, `remove_${f.name}`, ref, await parseValue(f.type.of, key, ctx.client, 'param-key'));
          } else throw new CliError(`The parameter '${xeFieldName(f)}' is neither a map nor a set`);
        },
      },
      {
        name: `${xc.name}-param-clear`, reqd: ['uuid', 'param-name'], optn: [],
        help: `Clears a parameter of the ${xc.name} with this uuid (an empty map, set or string).`,
        run: async (ctx) => {
          const f = paramField(xc, reqParam(ctx, 'param-name'));
          assertWritable(xc, f);
          const { ref } = await recordByUuid(ctx, xc);
          const empty = f.type.kind === 'map' ? {} : f.type.kind === 'set' ? [] : f.type.kind === 'ref' ? 'OpaqueRef:NULL' : f.type.kind === 'string' ? '' : undefined;
          if (empty === undefined) throw new CliError(`The parameter '${xeFieldName(f)}' cannot be cleared`);
          await callByName(ctx.client, C, `set_${f.name}`, ref, empty);
        },
      },
    );
  }
  return out;
}
