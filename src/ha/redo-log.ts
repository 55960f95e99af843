/**
 * The redo log: every committed database write, appended to etcd in order,
 * each append a transaction guarded by the master's term (its election key's
 * creation revision) — so a deposed master cannot write — and a new master
 * rebuilds the database from the snapshot and the entries after it.
 */
import type { Etcd3 } from 'etcd3';
import type { EtcdEndpoints } from './etcd-client.ts';
import type { Term } from './election.ts';
import { seqOfLogKey, type HaKeys } from './keys.ts';

/** One row as the log carries it: its state after the write, or null once deleted. */
export interface RedoRow {
  readonly cls: string;
  readonly ref: string;
  readonly rec: Readonly<Record<string, unknown>> | null;
}

/** The writer's term is over: another master (or none) holds the election key. */
export class DeposedError extends Error {
  constructor(term: Term) {
    super(`master term ${term.revision} of host ${term.host} is over`);
    this.name = 'DeposedError';
  }
}

/** What a new master rebuilds from: the snapshot's rows (the whole database), then each entry in order. */
export interface RedoContents {
  readonly snapshot: readonly RedoRow[];
  readonly entries: readonly (readonly RedoRow[])[];
  /** The sequence number the next entry takes. */
  readonly nextSeq: number;
}

interface SnapshotValue {
  /** Entries up to and including this one are in the snapshot. */
  readonly seq: number;
  readonly rows: RedoRow[];
}

const isRow = (v: unknown): v is RedoRow =>
  typeof v === 'object' && v !== null && 'cls' in v && typeof v.cls === 'string' && 'ref' in v && typeof v.ref === 'string' &&
  'rec' in v && (v.rec === null || (typeof v.rec === 'object' && !Array.isArray(v.rec)));

function parseRows(text: string, what: string): RedoRow[] {
  const v: unknown = JSON.parse(text);
  if (!Array.isArray(v) || !v.every(isRow)) throw new Error(`redo log: ${what} is not a list of rows`);
  return v;
}

export class RedoLog {
  constructor(private readonly etcd: EtcdEndpoints, private readonly keys: HaKeys) {}

  private guarded(c: Etcd3, term: Term) {
    return c.if(this.keys.master, 'Create', '==', term.revision);
  }

  /**
   * Appends one entry at `seq`; DeposedError if the term is over. A slot
   * already written under a term still ours can only be our own append
   * repeated after a lost answer: that counts as done.
   */
  async append(term: Term, seq: number, rows: readonly RedoRow[]): Promise<void> {
    const value = JSON.stringify(rows);
    const res = await this.etcd.call((c) =>
      this.guarded(c, term).and(this.keys.log(seq), 'Create', '==', 0).then(c.put(this.keys.log(seq)).value(value)).else(c.get(this.keys.master)).commit(),
    );
    if (res.succeeded) return;
    const master = res.responses[0]?.response_range?.kvs[0];
    if (master?.create_revision !== term.revision) throw new DeposedError(term);
    const slot = await this.etcd.call((c) => c.get(this.keys.log(seq)).string());
    if (slot !== value) throw new Error(`redo log: slot ${seq} holds another entry under our own term`);
  }

  /** Replaces the snapshot by the whole database as of entry `seq - 1`, and drops the entries it holds. */
  async writeSnapshot(term: Term, nextSeq: number, rows: readonly RedoRow[]): Promise<void> {
    const value: SnapshotValue = { seq: nextSeq - 1, rows: [...rows] };
    const text = JSON.stringify(value);
    const res = await this.etcd.call((c) =>
      this.guarded(c, term)
        .then(c.put(this.keys.snapshot).value(text), c.delete().inRange({ start: this.keys.log(0), end: this.keys.log(nextSeq) }))
        .commit(),
    );
    if (!res.succeeded) throw new DeposedError(term);
  }

  /** Everything a new master needs; entries before the snapshot's are skipped. */
  async read(): Promise<RedoContents> {
    const snapText = await this.etcd.call((c) => c.get(this.keys.snapshot).string());
    let snapshot: SnapshotValue = { seq: -1, rows: [] };
    if (snapText !== null) {
      const v: unknown = JSON.parse(snapText);
      if (typeof v !== 'object' || v === null || !('seq' in v) || typeof v.seq !== 'number' || !('rows' in v)) throw new Error('redo log: the snapshot is malformed');
      snapshot = { seq: v.seq, rows: parseRows(JSON.stringify(v.rows), 'the snapshot') };
    }
    const kvs = (await this.etcd.call((c) => c.getAll().prefix(this.keys.logs).sort('Key', 'Ascend').exec())).kvs;
    const entries: RedoRow[][] = [];
    let nextSeq = snapshot.seq + 1;
    for (const kv of kvs) {
      const seq = seqOfLogKey(kv.key.toString());
      if (seq <= snapshot.seq) continue;
      if (seq !== nextSeq) throw new Error(`redo log: entry ${nextSeq} is missing (found ${seq})`);
      entries.push(parseRows(kv.value.toString(), `entry ${seq}`));
      nextSeq = seq + 1;
    }
    return { snapshot: snapshot.rows, entries, nextSeq };
  }
}
