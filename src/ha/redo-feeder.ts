/**
 * Feeds the redo log from the database: the master follows the store's
 * committed changes (the event log, which hands out whole transactions) and
 * appends their final rows, in order, under its term. A call's reply waits
 * for its writes to be in etcd (`barrier`), so nothing a deposed master says
 * it did is lost, and a deposed master learns it at its next write.
 */
import { getClass, MODEL } from '../datamodel/model.ts';
import type { Store } from '../db/store.ts';
import type { Term } from './election.ts';
import { DeposedError, type RedoLog, type RedoRow } from './redo-log.ts';

/** After this many entries the master writes a fresh snapshot and drops them. */
const SNAPSHOT_EVERY = 1000;

/** The whole persistent database as rows (a snapshot's content). */
export function allRows(store: Store): RedoRow[] {
  const rows: RedoRow[] = [];
  for (const name of persistentClasses()) for (const [ref, rec] of store.allAny(name)) rows.push({ cls: name, ref, rec });
  return rows;
}

const persistentClasses = (): string[] => MODEL.filter((c) => c.decl.persistent).map((c) => c.name);

export class RedoFeeder {
  private token: number;
  private acked: number;
  private seq: number;
  private sinceSnapshot = 0;
  private failure: Error | undefined;
  private stopped = false;
  private readonly abort = new AbortController();
  private waiters: { gen: number; resolve: () => void; reject: (e: Error) => void }[] = [];

  constructor(
    private readonly store: Store,
    private readonly log: RedoLog,
    private readonly term: Term,
    nextSeq: number,
    private readonly onDeposed: (err: DeposedError) => void,
  ) {
    this.seq = nextSeq;
    this.token = store.events.current;
    this.acked = this.token;
  }

  /** Writes the base snapshot (the database as it is now) and follows the store from here. */
  async start(): Promise<void> {
    await this.log.writeSnapshot(this.term, this.seq, allRows(this.store));
    void this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopped && !this.failure) {
      if (this.store.events.current === this.token) await this.store.events.wait(null, 60_000, this.abort.signal);
      if (this.stopped) break;
      const upTo = this.store.events.current;
      const rows = this.store.events
        .since(this.token, null)
        .filter((c) => getClass(c.cls)?.decl.persistent)
        .map((c): RedoRow => ({ cls: c.cls, ref: c.ref, rec: c.op === 'del' ? null : c.snapshot }));
      try {
        if (rows.length > 0) {
          await this.log.append(this.term, this.seq, rows);
          this.seq++;
          if (++this.sinceSnapshot >= SNAPSHOT_EVERY) {
            await this.log.writeSnapshot(this.term, this.seq, allRows(this.store));
            this.sinceSnapshot = 0;
          }
        }
        this.token = upTo;
        this.acked = upTo;
        this.settle();
      } catch (err) {
        if (err instanceof DeposedError) {
          this.fail(err);
          this.onDeposed(err);
        } else await new Promise((r) => setTimeout(r, 200)); // etcd busy or unreachable: try again (liveness decides when to give up)
      }
    }
  }

  private settle(): void {
    const ready = this.waiters.filter((w) => w.gen <= this.acked);
    this.waiters = this.waiters.filter((w) => w.gen > this.acked);
    for (const w of ready) w.resolve();
  }

  private fail(err: Error): void {
    this.failure = err;
    for (const w of this.waiters) w.reject(err);
    this.waiters = [];
  }

  /** Resolves once every write committed so far is in the redo log; rejects if this master was deposed. */
  barrier(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const gen = this.store.events.current;
    if (gen <= this.acked) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ gen, resolve, reject }));
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
    this.fail(new Error('the redo log is stopped'));
  }
}
