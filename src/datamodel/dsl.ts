/**
 * The little language the datamodel is written in. Each class file declares
 * its fields and explicit messages with these helpers; everything generic
 * (getters, setters, map/set mutators, get_record, get_by_uuid, …) is derived
 * in `model.ts`, so adding a field is one line.
 */

/** xapi's roles, most powerful first. Each role may do all a weaker one may. */
export const ROLE_LADDER = ['pool-admin', 'pool-operator', 'vm-power-admin', 'vm-admin', 'vm-operator', 'read-only'] as const;
export type LadderRole = (typeof ROLE_LADDER)[number];
export type Role = LadderRole | 'client-cert';

/**
 * Who may call a message, written as the weakest ladder role allowed
 * (`'vm-admin'` = pool-admin … vm-admin), optionally `+cert` when the
 * client-cert role may call it too, or `'none'` (not callable by any role:
 * only the local superuser, e.g. internal or login messages).
 */
export type RoleSpec = LadderRole | `${LadderRole}+cert` | 'none' | 'cert';

export type Qualifier = 'RO/runtime' | 'RO/constructor' | 'RW';
export type Lifecycle = 'published' | 'prototyped' | 'deprecated' | 'removed';

/** A value a field may default to, in its JavaScript form. */
export type DefaultValue = string | number | boolean | null | readonly unknown[] | { readonly [k: string]: unknown };

export interface FieldDecl {
  readonly name: string;
  /** xapi type syntax: `string`, `int`, `VM ref`, `string set`, `(string -> string) map`, `enum vm_power_state` … */
  readonly type: string;
  readonly qualifier: Qualifier;
  readonly default?: DefaultValue;
  /** Roles allowed to write (RW fields) — defaults to the class's `write`. */
  readonly write?: RoleSpec;
  /** Roles allowed to read — defaults to the class's `read`. */
  readonly read?: RoleSpec;
  readonly lifecycle?: Lifecycle;
  readonly doc?: string;
}

export interface ParamDecl {
  readonly name: string;
  readonly type: string;
  /** The value a caller may leave out (only trailing parameters have one, as in xapi). */
  readonly default?: DefaultValue;
}

export interface MessageDecl {
  readonly name: string;
  /** Parameters after the session, in order. */
  readonly params: readonly ParamDecl[];
  readonly result: string;
  readonly roles: RoleSpec;
  /** False for the few messages that take no session (login and friends). */
  readonly session: boolean;
  /** Whether `Async.<Class>.<name>` exists. */
  readonly async: boolean;
  readonly lifecycle: Lifecycle;
  /** A Xenon addition that xapi does not have. */
  readonly extension: boolean;
  readonly doc?: string;
}

export interface ClassDecl {
  readonly name: string;
  readonly doc: string;
  /** Default roles for the generic getters. */
  readonly read: RoleSpec;
  /** Default roles for generated setters and map/set mutators. */
  readonly write: RoleSpec;
  /** Roles for the generated create/destroy, when the class has them. */
  readonly ctor?: RoleSpec;
  /** get_all and get_all_records are offered. */
  readonly getAll: boolean;
  /** get_by_name_label is offered. */
  readonly byNameLabel: boolean;
  /** False for classes with no generated messages at all (event, message, data_source). */
  readonly accessors: boolean;
  /** Stored in the database (false: event, data_source — values made on demand). */
  readonly persistent: boolean;
  /**
   * Objects that only their owner may see, whatever the roles: 'self' — the
   * caller's own object, as a session (its reference is its credential).
   */
  readonly ownerOnly?: 'self';
  readonly fields: readonly FieldDecl[];
  readonly messages: readonly MessageDecl[];
}

type FieldOpts = Omit<Partial<FieldDecl>, 'name' | 'type' | 'qualifier'>;

const field =
  (qualifier: Qualifier) =>
  (name: string, type: string, opts: FieldOpts = {}): FieldDecl => ({ name, type, qualifier, ...opts });

/** A field only the server writes. */
export const rt = field('RO/runtime');
/** A field set when the object is created, read-only afterwards. */
export const cn = field('RO/constructor');
/** A field clients may set. */
export const rw = field('RW');

/**
 * Parses `'VM ref vm, bool force = false'` into parameter declarations. A
 * default is JSON (`false`, `0`, `""`, `{}`, `[]`) or, for a ref, the bare
 * `OpaqueRef:NULL`; once one parameter has a default, every later one must.
 */
export function parseParams(text: string): ParamDecl[] {
  if (text.trim() === '') return [];
  const params = splitTopLevel(text).map((part): ParamDecl => {
    const [decl, defaultText] = splitDefault(part.trim());
    const cut = decl.lastIndexOf(' ');
    if (cut < 0) throw new Error(`datamodel: parameter needs a type and a name: '${decl}'`);
    const param = { type: decl.slice(0, cut).trim(), name: decl.slice(cut + 1) };
    return defaultText === undefined ? param : { ...param, default: parseDefault(defaultText) };
  });
  const firstDefault = params.findIndex((p) => p.default !== undefined);
  if (firstDefault >= 0 && params.slice(firstDefault).some((p) => p.default === undefined)) {
    throw new Error(`datamodel: only trailing parameters may have defaults: '${text}'`);
  }
  return params;
}

/** Splits at commas outside brackets and quotes (defaults may hold `{}` or strings). */
function splitTopLevel(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"' && text[i - 1] !== '\\') quoted = !quoted;
    else if (!quoted && (c === '{' || c === '[')) depth++;
    else if (!quoted && (c === '}' || c === ']')) depth--;
    else if (!quoted && depth === 0 && c === ',') {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  out.push(text.slice(start));
  return out;
}

function splitDefault(part: string): [string, string | undefined] {
  const eq = part.indexOf('=');
  return eq < 0 ? [part, undefined] : [part.slice(0, eq).trim(), part.slice(eq + 1).trim()];
}

function parseDefault(text: string): DefaultValue {
  if (text.startsWith('OpaqueRef:')) return text;
  try {
    return JSON.parse(text) as DefaultValue;
  } catch {
    throw new Error(`datamodel: a default must be JSON or a ref: '${text}'`);
  }
}

interface MsgOpts {
  session?: boolean;
  async?: boolean;
  lifecycle?: Lifecycle;
  extension?: boolean;
  doc?: string;
}

/**
 * An explicit message: `msg('start', 'VM ref vm, bool start_paused, bool force', 'void', 'vm-operator')`.
 * Messages are async unless they take no session or say otherwise.
 */
export function msg(name: string, params: string, result: string, roles: RoleSpec, opts: MsgOpts = {}): MessageDecl {
  const session = opts.session ?? true;
  return {
    name,
    params: parseParams(params),
    result,
    roles,
    session,
    async: opts.async ?? session,
    lifecycle: opts.lifecycle ?? 'published',
    extension: opts.extension ?? false,
    doc: opts.doc,
  };
}

interface ClassOpts {
  doc: string;
  read?: RoleSpec;
  write: RoleSpec;
  ctor?: RoleSpec;
  getAll?: boolean;
  byNameLabel?: boolean;
  accessors?: boolean;
  persistent?: boolean;
  ownerOnly?: 'self';
  fields: readonly FieldDecl[];
  messages: readonly MessageDecl[];
}

export function defineClass(name: string, o: ClassOpts): ClassDecl {
  return {
    name,
    doc: o.doc,
    read: o.read ?? 'read-only+cert',
    write: o.write,
    ctor: o.ctor,
    getAll: o.getAll ?? true,
    byNameLabel: o.byNameLabel ?? false,
    accessors: o.accessors ?? true,
    persistent: o.persistent ?? true,
    ownerOnly: o.ownerOnly,
    fields: o.fields,
    messages: o.messages,
  };
}

/** Expands a role spec into the list of roles, in xapi's order. */
export function expandRoles(spec: RoleSpec): Role[] {
  if (spec === 'none') return [];
  if (spec === 'cert') return ['client-cert'];
  const cert = spec.endsWith('+cert');
  const weakest = (cert ? spec.slice(0, -5) : spec) as LadderRole;
  const ladder = ROLE_LADDER.slice(0, ROLE_LADDER.indexOf(weakest) + 1) as Role[];
  if (!cert) return ladder;
  // xapi lists client-cert just before read-only
  const ro = ladder.indexOf('read-only');
  return ro < 0 ? [...ladder, 'client-cert'] : [...ladder.slice(0, ro), 'client-cert', 'read-only'];
}
