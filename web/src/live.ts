/**
 * The console's copy of the pool: every record of the classes it shows, kept
 * current by one long `event.from` call at a time (no polling). Each batch of
 * events replaces the maps of the classes it touched, so React components
 * that read one class re-render only when that class changed.
 */
import { useSyncExternalStore } from 'react';
import { ConnectionError, XenApiClientError, type BrowserXenApiClient } from '../../src/client/browser.ts';
import type { Records } from '../../src/client/generated.ts';

/** What the tree and the overview pages show. */
const TREE_CLASSES = ['pool', 'host', 'host_metrics', 'VM', 'SR', 'network', 'task'] as const satisfies readonly (keyof Records)[];
/** What object pages show besides: in a big pool, most of the records. */
const DETAIL_CLASSES = ['VM_metrics', 'VM_guest_metrics', 'console', 'PBD', 'VDI', 'VBD', 'VIF', 'PIF', 'VLAN'] as const satisfies readonly (keyof Records)[];
export const LIVE_CLASSES = [...TREE_CLASSES, ...DETAIL_CLASSES] as const;
export type LiveClass = (typeof LIVE_CLASSES)[number];
export type Table<C extends LiveClass> = ReadonlyMap<string, Records[C]>;

interface EventRecord {
  class: string;
  operation: 'add' | 'mod' | 'del';
  ref: string;
  snapshot?: unknown;
}
interface EventBatch {
  events: EventRecord[];
  token: string;
}

export type LinkState =
  | { kind: 'loading' }
  | { kind: 'live' }
  | { kind: 'retrying'; error: string; inSeconds: number }
  | { kind: 'logged-out'; error: string };

/** xapi names classes in lower case in events ("vm", "sr"). */
const BY_EVENT_NAME = new Map<string, LiveClass>(LIVE_CLASSES.map((c) => [c.toLowerCase(), c]));

export class LiveStore {
  private tables = new Map<LiveClass, Map<string, unknown>>(LIVE_CLASSES.map((c) => [c, new Map()]));
  private readonly listeners = new Set<() => void>();
  private stopped = false;
  private abort = new AbortController();
  link: LinkState = { kind: 'loading' };
  /** Set once the first full load has arrived. */
  loaded = false;

  constructor(private readonly client: BrowserXenApiClient, private readonly onLoggedOut: (why: string) => void) {}

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  table<C extends LiveClass>(cls: C): Table<C> {
    return this.tables.get(cls) as Map<string, Records[C]>;
  }

  get<C extends LiveClass>(cls: C, ref: string): Records[C] | undefined {
    return this.table(cls).get(ref);
  }

  private notify(): void {
    for (const fn of this.listeners) fn();
  }

  private setLink(link: LinkState): void {
    this.link = link;
    this.notify();
  }

  /** Applies one batch: touched classes get new maps (so their identity says "changed"). */
  private apply(events: readonly EventRecord[]): void {
    const fresh = new Map<LiveClass, Map<string, unknown>>();
    for (const ev of events) {
      const cls = BY_EVENT_NAME.get(ev.class.toLowerCase());
      if (!cls) continue;
      let t = fresh.get(cls);
      if (!t) fresh.set(cls, (t = new Map(this.tables.get(cls))));
      if (ev.operation === 'del' || ev.snapshot === undefined || ev.snapshot === null) t.delete(ev.ref);
      else t.set(ev.ref, ev.snapshot);
    }
    if (fresh.size === 0) return;
    const next = new Map(this.tables);
    for (const [c, t] of fresh) next.set(c, t);
    this.tables = next;
  }

  /**
   * Runs until stop(). The classes the tree needs come first, so the page is
   * usable before the rest (metrics, consoles, devices: most of the records
   * in a big pool) has arrived through a second stream.
   */
  async run(): Promise<void> {
    await this.follow(TREE_CLASSES, () => void this.follow(DETAIL_CLASSES));
  }

  /** One event.from stream: the first call (token '') brings every record of the classes, later ones what changed. */
  private async follow(classes: readonly LiveClass[], onFirst?: () => void): Promise<void> {
    let token = '';
    let backoff = 1;
    while (!this.stopped) {
      try {
        const batch = (await this.client.call('event.from', [this.client.session, classes, token, 30], this.abort.signal)) as EventBatch;
        if (this.stopped) return;
        if (token === '') this.clear(classes);
        this.apply(batch.events);
        if (token === '' && onFirst) onFirst();
        token = batch.token;
        backoff = 1;
        this.loaded = true;
        if (this.link.kind !== 'live') this.link = { kind: 'live' };
        this.notify();
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof XenApiClientError && e.code === 'SESSION_INVALID') {
          this.stop();
          this.setLink({ kind: 'logged-out', error: 'Your session has ended (SESSION_INVALID): please log in again.' });
          return this.onLoggedOut('Your session has ended: please log in again.');
        }
        // events lost while away: start again from a full load
        if (e instanceof XenApiClientError && e.code === 'EVENTS_LOST') token = '';
        const what = e instanceof ConnectionError ? e.message : e instanceof XenApiClientError ? `${e.code} ${e.params.join(' ')}` : String(e);
        this.setLink({ kind: 'retrying', error: what, inSeconds: backoff });
        await new Promise((r) => setTimeout(r, backoff * 1000));
        backoff = Math.min(backoff * 2, 30);
      }
    }
  }

  /** A full load replaces what was there (objects deleted while away go). */
  private clear(classes: readonly LiveClass[]): void {
    const next = new Map(this.tables);
    for (const c of classes) next.set(c, new Map());
    this.tables = next;
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
  }

  /** Resolves when the task has finished: its result, or its error thrown (followed through events). */
  waitTask(task: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const t = this.get('task', task);
        if (!t || t.status === 'pending' || t.status === 'cancelling') return false;
        unsubscribe();
        if (t.status === 'success') resolve(t.result);
        else reject(new XenApiClientError(t.error_info[0] ?? 'INTERNAL_ERROR', t.error_info.slice(1)));
        return true;
      };
      const unsubscribe = this.subscribe(() => void check());
      check();
    });
  }
}

/** A class's records; re-renders when that class changes. */
export function useTable<C extends LiveClass>(store: LiveStore, cls: C): Table<C> {
  return useSyncExternalStore(store.subscribe, () => store.table(cls));
}

export function useLink(store: LiveStore): LinkState {
  return useSyncExternalStore(store.subscribe, () => store.link);
}
