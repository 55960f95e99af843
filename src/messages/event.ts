/** event.from, the legacy register/next pair, inject and get_current_id. */
import { readableRecord, visibleCounts, type Reader } from '../auth/read-access.ts';
import { XenApiError } from '../datamodel/api-error.ts';
import { findClassInsensitive, MODEL } from '../datamodel/model.ts';
import type { Change } from '../db/events.ts';
import type { Store } from '../db/store.ts';
import { TypedValue } from '../wire/marshal.ts';
import { escapeXml } from '../wire/xmlrpc.ts';
import { formatDateTime } from '../datamodel/types.ts';
import type { event_record } from '../datamodel/generated/records.ts';
import type { event_handlers } from './generated/handlers.ts';

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

/**
 * The one place an event record departs from its declared type: xapi sends
 * `id` as a string on both wires although the datamodel says int.
 */
const asDeclared = (records: Record<string, unknown>[]): event_record[] => records as unknown as event_record[];

interface Batch {
  /** What this caller may see, each snapshot as it may read it. */
  readonly changes: readonly Change[];
  /**
   * Where the next call resumes: after the last change looked at when the
   * batch was cut short, otherwise at the present (nothing older is left).
   */
  readonly next: number;
}

/**
 * The empty token: every object of the classes as it is now, as xapi answers
 * it — also those loaded from the database at start, which the log (kept in
 * memory since then) has never seen.
 */
function everything(store: Store, reader: Reader, f: Filter): Batch {
  const changes: Change[] = [];
  const gen = store.events.current;
  const time = Date.now();
  for (const cls of MODEL) {
    if (f.classes !== null && !f.classes.has(cls.name.toLowerCase())) continue;
    for (const [ref, record] of store.allAny(cls.name)) {
      if (f.refs && !f.refs.has(ref)) continue;
      const snapshot = readableRecord(reader, cls.name, ref, record);
      if (snapshot) changes.push({ gen, cls: cls.name, ref, op: 'add', snapshot, time });
    }
  }
  return { changes, next: gen };
}

function changesFor(store: Store, reader: Reader, token: number, f: Filter): Batch {
  if (token === 0) return everything(store, reader, f);
  if (store.events.isStale(token)) throw new XenApiError('EVENTS_LOST');
  const all = store.events.since(token, f.classes, BATCH_LIMIT);
  const changes: Change[] = [];
  for (const c of all) {
    if (f.refs && !f.refs.has(c.ref)) continue;
    const snapshot = readableRecord(reader, c.cls, c.ref, c.snapshot);
    if (snapshot) changes.push(snapshot === c.snapshot ? c : { ...c, snapshot });
  }
  const last = all.length ? all[all.length - 1].gen : token;
  return { changes, next: all.length >= BATCH_LIMIT ? last : Math.max(last, store.events.current) };
}

/**
 * event.from's timeout (seconds, a float) as milliseconds: zero, negative or
 * NaN is no wait; anything huge is waited in timer-sized slices.
 */
function timeoutMs(seconds: unknown): number {
  const s = Number(seconds);
  if (s === Infinity) return Infinity;
  return Number.isFinite(s) && s > 0 ? s * 1000 : 0;
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

function validRefCounts(store: Store, reader: Reader): RefCounts {
  return new RefCounts(visibleCounts(reader, (cls) => store.count(cls), (cls, ref) => store.getAny(cls, ref) !== undefined));
}

/** Legacy event.register/next subscriptions, by session. */
const subscriptions = new Map<string, { names: Set<string>; cursor: number }>();

export const eventHandlers: event_handlers = {
  from: async ({ services: { store, sessions }, session }, a) => {
    const filter = parseClasses(a.classes);
    const token = parseToken(a.token);
    const deadline = Date.now() + timeoutMs(a.timeout);
    let batch = changesFor(store, session, token, filter);
    while (batch.changes.length === 0 && Date.now() < deadline) {
      await store.events.wait(filter.classes, deadline - Date.now());
      sessions.check(session.ref); // a session logged out meanwhile stops waiting
      batch = changesFor(store, session, token, filter);
    }
    return { events: batch.changes.map(eventRecord), valid_ref_counts: validRefCounts(store, session), token: tokenOf(batch.next) };
  },

  register: ({ services: { store }, session }, a) => {
    // subscriptions of sessions gone since (logged out, expired, over the limit) are dropped here
    for (const ref of subscriptions.keys()) if (!store.getAny('session', ref)) subscriptions.delete(ref);
    const sub = subscriptions.get(session.ref) ?? { names: new Set<string>(), cursor: store.events.current };
    for (const c of a.classes) sub.names.add(c);
    subscriptions.set(session.ref, sub);
  },

  unregister: ({ session }, a) => {
    const sub = subscriptions.get(session.ref);
    if (!sub) return;
    for (const c of a.classes) sub.names.delete(c);
  },

  next: async ({ services: { store, sessions }, session }) => {
    const sub = subscriptions.get(session.ref);
    if (!sub) throw new XenApiError('SESSION_NOT_REGISTERED', session.ref);
    for (;;) {
      const filter = parseClasses([...sub.names]);
      const batch = changesFor(store, session, sub.cursor, filter);
      sub.cursor = batch.next;
      if (batch.changes.length) return asDeclared(batch.changes.map(eventRecord));
      await store.events.wait(filter.classes, 30_000);
      sessions.check(session.ref); // a session logged out meanwhile stops waiting
    }
  },

  inject: ({ services: { store } }, a) => {
    const cls = findClassInsensitive(a.class);
    if (!cls || !cls.decl.persistent) throw new XenApiError('HANDLE_INVALID', a.class, a.ref);
    store.mustAny(cls.name, a.ref);
    store.transact((tx) => tx.updateAny(cls.name, a.ref, {}));
    return tokenOf(store.events.current);
  },

  get_current_id: ({ services: { store } }) => store.events.current,
};
