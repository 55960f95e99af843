/** event.from, the legacy register/next pair, inject and get_current_id. */
import { XenApiError } from '../datamodel/api-error.ts';
import { findClassInsensitive, MODEL } from '../datamodel/model.ts';
import type { Change } from '../db/events.ts';
import type { Store } from '../db/store.ts';
import { TypedValue } from '../wire/marshal.ts';
import { escapeXml } from '../wire/xmlrpc.ts';
import { formatDateTime } from '../datamodel/types.ts';
import type { HandlerTable } from './context.ts';

/** How many changes one event.from/next answer carries at most; the rest come next call. */
const BATCH_LIMIT = 20_000;

interface Filter {
  readonly classes: ReadonlySet<string> | null; // lower-case class names; null = all
  readonly refs: ReadonlySet<string> | null; // "class/ref" subscriptions
}

/** `['*']`, `['VM', 'vbd_metrics']`, `['vm/OpaqueRef:…']`; unknown names are ignored. */
function parseClasses(list: readonly string[]): Filter {
  if (list.includes('*')) return { classes: null, refs: null };
  const classes = new Set<string>();
  const refs = new Set<string>();
  for (const item of list) {
    const [name, ref] = item.split('/', 2);
    const cls = findClassInsensitive(name);
    if (!cls) continue;
    classes.add(cls.name.toLowerCase());
    if (ref) refs.add(ref);
  }
  return { classes, refs: refs.size ? refs : null };
}

function parseToken(token: string): number {
  if (token === '') return 0;
  const m = /^(\d+)(?:,\d*)?$/.exec(token.trim());
  if (!m) throw new XenApiError('EVENT_FROM_TOKEN_PARSE_FAILURE', token);
  return Number(m[1]);
}

const tokenOf = (gen: number): string => String(gen);

function eventRecord(c: Change): Record<string, unknown> {
  return {
    id: String(c.gen), // xapi sends the event id as a string, on both wires
    timestamp: formatDateTime(new Date(c.time)),
    class: c.cls.toLowerCase(),
    operation: c.op,
    ref: c.ref,
    obj_uuid: String(c.snapshot.uuid ?? ''),
    snapshot: new TypedValue({ kind: 'record', cls: c.cls }, c.snapshot),
  };
}

function changesFor(store: Store, token: number, f: Filter): Change[] {
  if (store.events.isStale(token)) throw new XenApiError('EVENTS_LOST');
  const all = store.events.since(token, f.classes, BATCH_LIMIT);
  return f.refs ? all.filter((c) => f.refs!.has(c.ref)) : all;
}

/**
 * xapi's valid_ref_counts are int32s: real XML-RPC `<int>`s, unlike int64
 * fields, which travel as strings. Xen Orchestra compares `.task` with `!==`
 * against its own count and re-reads every task on a mismatch.
 */
class RefCounts {
  constructor(readonly counts: Readonly<Record<string, number>>) {}
  toXmlRpc(): string {
    let s = '<value><struct>';
    for (const [k, n] of Object.entries(this.counts)) s += `<member><name>${escapeXml(k)}</name><value><int>${n}</int></value></member>`;
    return `${s}</struct></value>`;
  }
  toJSON(): Readonly<Record<string, number>> {
    return this.counts;
  }
}

/**
 * Where the next call resumes: after the last change returned when the batch
 * was cut short, otherwise at the present (nothing older is left to see).
 */
function resumeAt(store: Store, changes: readonly Change[], from: number): number {
  const last = changes.length ? changes[changes.length - 1].gen : from;
  return changes.length >= BATCH_LIMIT ? last : Math.max(last, store.events.current);
}

function validRefCounts(store: Store): RefCounts {
  const out: Record<string, number> = {};
  for (const c of MODEL) if (c.decl.persistent) out[c.name.toLowerCase()] = store.count(c.name);
  return new RefCounts(out);
}

/** Legacy event.register/next subscriptions, by session. */
const subscriptions = new Map<string, { names: Set<string>; cursor: number }>();

export const eventHandlers: HandlerTable = {
  from: async ({ services: { store } }, a) => {
    const filter = parseClasses(a.classes as string[]);
    const token = parseToken(a.token as string);
    const deadline = Date.now() + Math.max(0, Number(a.timeout)) * 1000;
    let changes = changesFor(store, token, filter);
    while (changes.length === 0 && Date.now() < deadline) {
      await store.events.wait(filter.classes, deadline - Date.now());
      changes = changesFor(store, token, filter);
    }
    return { events: changes.map(eventRecord), valid_ref_counts: validRefCounts(store), token: tokenOf(resumeAt(store, changes, token)) };
  },

  register: ({ services: { store }, session }, a) => {
    const sub = subscriptions.get(session.ref) ?? { names: new Set<string>(), cursor: store.events.current };
    for (const c of a.classes as string[]) sub.names.add(c);
    subscriptions.set(session.ref, sub);
  },

  unregister: ({ session }, a) => {
    const sub = subscriptions.get(session.ref);
    if (!sub) return;
    for (const c of a.classes as string[]) sub.names.delete(c);
  },

  next: async ({ services: { store, sessions }, session }) => {
    const sub = subscriptions.get(session.ref);
    if (!sub) throw new XenApiError('SESSION_NOT_REGISTERED', session.ref);
    for (;;) {
      const filter = parseClasses([...sub.names]);
      const changes = changesFor(store, sub.cursor, filter);
      if (changes.length) {
        sub.cursor = resumeAt(store, changes, sub.cursor);
        return changes.map(eventRecord);
      }
      await store.events.wait(filter.classes, 30_000);
      sessions.check(session.ref); // a session logged out meanwhile stops waiting
    }
  },

  inject: ({ services: { store } }, a) => {
    const cls = findClassInsensitive(a.class as string);
    if (!cls || !cls.decl.persistent) throw new XenApiError('HANDLE_INVALID', String(a.class), String(a.ref));
    store.must(cls.name, a.ref as string);
    store.transact((tx) => tx.update(cls.name, a.ref as string, {}));
    return tokenOf(store.events.current);
  },

  get_current_id: ({ services: { store } }) => store.events.current,
};
