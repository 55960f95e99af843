/**
 * The object database: every record lives in memory (fast reads, indexes by
 * uuid) and in SQLite (one table per class, a column per field, derived from
 * the datamodel). A transaction changes memory with an undo log, then writes
 * the changed rows to SQLite in one SQLite transaction — durable before the
 * caller answers — and only then publishes the changes as events.
 */
import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { XenApiError } from '../datamodel/api-error.ts';
import type { ClassName, Records, Ref } from '../datamodel/generated/records.ts';
import { defaultRecord, getClass, MODEL, type ModelClass } from '../datamodel/model.ts';
import type { XType } from '../datamodel/types.ts';
import { RELATIONS, type Relation } from '../datamodel/relations.ts';
import { EventLog, type EventOp } from './events.ts';
import type { DbRecord } from './record.ts';

/** Relations by the child class whose ref field drives them. */
const RELATIONS_BY_CHILD = new Map<string, Relation[]>();
for (const r of RELATIONS) RELATIONS_BY_CHILD.set(r.child.cls, [...(RELATIONS_BY_CHILD.get(r.child.cls) ?? []), r]);

export type { DbRecord } from './record.ts';
/** A stored record of class C, as the datamodel declares it. */
export type Row<C extends ClassName> = Readonly<Records[C]>;
/** Fields to write to a record of class C. */
export type Patch<C extends ClassName> = Partial<Records[C]>;

export const newRef = (): string => `OpaqueRef:${randomUUID()}`;

/**
 * The one place a stored record meets its declared type: create and update
 * accept only `Patch<C>` for literal class names, and dispatch checks every
 * argument against the datamodel before it reaches a handler.
 */
const typed = <C extends ClassName>(r: DbRecord | undefined): Row<C> | undefined => r as Row<C> | undefined;

interface Pending {
  cls: string;
  ref: string;
  op: EventOp;
  before: DbRecord | undefined;
}

export interface Tx {
  get<C extends ClassName>(cls: C, ref: string): Row<C> | undefined;
  /** Creates a record, filling defaults and a fresh uuid; returns its ref. */
  create<C extends ClassName>(cls: C, fields: Patch<C>, ref?: string): Ref<C>;
  update<C extends ClassName>(cls: C, ref: string, patch: Patch<C>): Row<C>;
  delete(cls: ClassName, ref: string): void;
  /** The same for a class named at run time (fields checked against the model only). */
  getAny(cls: string, ref: string): DbRecord | undefined;
  createAny(cls: string, fields: Readonly<Record<string, unknown>>, ref?: string): string;
  updateAny(cls: string, ref: string, patch: Readonly<Record<string, unknown>>): DbRecord;
  deleteAny(cls: string, ref: string): void;
}

export interface StoreOptions {
  /** SQLite file, or ':memory:' for throw-away databases (tests, benchmarks). */
  path: string;
  /**
   * NORMAL (default): each commit is in the WAL before the caller is answered, so it
   * survives a crash or kill -9 of the daemon; FULL also fsyncs every commit, so it
   * survives power loss, at the price of a disk flush per write.
   */
  synchronous?: 'FULL' | 'NORMAL' | 'OFF';
}

const sqlType = (t: XType): string =>
  t.kind === 'int' || t.kind === 'bool' ? 'INTEGER' : t.kind === 'float' ? 'REAL' : 'TEXT';

const quote = (name: string): string => `"${name.replace(/"/g, '""')}"`;

function encodeColumn(t: XType, v: unknown): unknown {
  switch (t.kind) {
    case 'bool': return v ? 1 : 0;
    case 'set': case 'map': case 'record': case 'any': return JSON.stringify(v);
    default: return v;
  }
}

function decodeColumn(t: XType, v: unknown): unknown {
  switch (t.kind) {
    case 'bool': return v === 1;
    case 'set': case 'map': case 'record': case 'any': return typeof v === 'string' ? JSON.parse(v) : v;
    default: return v;
  }
}

interface TableStatements {
  upsert: Database.Statement;
  remove: Database.Statement;
}

export class Store {
  readonly events = new EventLog();
  private readonly sql: Database.Database;
  private readonly tables = new Map<string, Map<string, DbRecord>>();
  private readonly uuidIndex = new Map<string, Map<string, string>>();
  private readonly statements = new Map<string, TableStatements>();
  private pending: Pending[] | null = null;
  /** On a pool member the database is the master's replica: only replication writes it. */
  private replica = false;

  constructor(opts: StoreOptions) {
    this.sql = new Database(opts.path);
    this.sql.pragma('journal_mode = WAL');
    this.sql.pragma(`synchronous = ${opts.synchronous ?? 'NORMAL'}`);
    this.sql.exec('CREATE TABLE IF NOT EXISTS xenon_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)');
    for (const cls of MODEL) {
      this.tables.set(cls.name, new Map());
      this.uuidIndex.set(cls.name, new Map());
      if (cls.decl.persistent) this.prepareTable(cls);
    }
    this.load();
  }

  /** Creates the class's table, adds columns for fields new since it was made. */
  private prepareTable(cls: ModelClass): void {
    const table = quote(cls.name);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS ${table} (ref TEXT PRIMARY KEY)`);
    const have = new Set((this.sql.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name));
    for (const f of cls.fields) {
      if (!have.has(f.name)) this.sql.exec(`ALTER TABLE ${table} ADD COLUMN ${quote(f.name)} ${sqlType(f.type)}`);
    }
    const cols = ['ref', ...cls.fields.map((f) => f.name)];
    this.statements.set(cls.name, {
      upsert: this.sql.prepare(`INSERT OR REPLACE INTO ${table} (${cols.map(quote).join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`),
      remove: this.sql.prepare(`DELETE FROM ${table} WHERE ref = ?`),
    });
  }

  private load(): void {
    for (const cls of MODEL) {
      if (!cls.decl.persistent) continue;
      const rows = this.sql.prepare(`SELECT * FROM ${quote(cls.name)}`).all() as Record<string, unknown>[];
      const table = this.tables.get(cls.name)!;
      const uuids = this.uuidIndex.get(cls.name)!;
      for (const row of rows) {
        const rec = defaultRecord(cls);
        for (const f of cls.fields) {
          const v = row[f.name];
          if (v !== null && v !== undefined) rec[f.name] = decodeColumn(f.type, v);
        }
        const ref = row.ref as string;
        table.set(ref, Object.freeze(rec));
        if (typeof rec.uuid === 'string') uuids.set(rec.uuid, ref);
      }
    }
  }

  private table(cls: string): Map<string, DbRecord> {
    const t = this.tables.get(cls);
    if (!t) throw new Error(`no such class: ${cls}`);
    return t;
  }

  get<C extends ClassName>(cls: C, ref: string): Row<C> | undefined {
    return typed<C>(this.getAny(cls, ref));
  }

  /** The record, or HANDLE_INVALID naming the class and ref. */
  must<C extends ClassName>(cls: C, ref: string): Row<C> {
    return typed<C>(this.mustAny(cls, ref))!;
  }

  all<C extends ClassName>(cls: C): IterableIterator<[Ref<C>, Row<C>]> {
    return this.table(cls).entries() as IterableIterator<[Ref<C>, Row<C>]>;
  }

  /** Finds the records matching a predicate. */
  where<C extends ClassName>(cls: C, pred: (r: Row<C>) => boolean): [Ref<C>, Row<C>][] {
    const out: [Ref<C>, Row<C>][] = [];
    for (const [ref, rec] of this.all(cls)) if (pred(rec)) out.push([ref, rec]);
    return out;
  }

  getAny(cls: string, ref: string): DbRecord | undefined {
    return this.tables.get(cls)?.get(ref);
  }

  mustAny(cls: string, ref: string): DbRecord {
    const r = this.getAny(cls, ref);
    if (!r) throw new XenApiError('HANDLE_INVALID', cls, ref);
    return r;
  }

  allAny(cls: string): IterableIterator<[string, DbRecord]> {
    return this.table(cls).entries();
  }

  whereAny(cls: string, pred: (r: DbRecord) => boolean): [string, DbRecord][] {
    const out: [string, DbRecord][] = [];
    for (const e of this.table(cls)) if (pred(e[1])) out.push(e);
    return out;
  }

  refs<C extends ClassName>(cls: C): Ref<C>[];
  refs(cls: string): string[];
  refs(cls: string): string[] {
    return [...this.table(cls).keys()];
  }

  count(cls: string): number {
    return this.table(cls).size;
  }

  byUuid<C extends ClassName>(cls: C, uuid: string): Ref<C> | undefined;
  byUuid(cls: string, uuid: string): string | undefined;
  byUuid(cls: string, uuid: string): string | undefined {
    return this.uuidIndex.get(cls)?.get(uuid);
  }

  meta(key: string): string | undefined {
    const row = this.sql.prepare('SELECT value FROM xenon_meta WHERE key = ?').get(key) as { value: string } | undefined;
    return row?.value;
  }

  setMeta(key: string, value: string): void {
    this.sql.prepare('INSERT OR REPLACE INTO xenon_meta (key, value) VALUES (?, ?)').run(key, value);
  }

  /** Gives other subsystems (accounts, …) tables of their own in the same file. */
  get sqlite(): Database.Database {
    return this.sql;
  }

  /**
   * Runs `fn` as one transaction. Memory changes as `fn` goes (so it reads its
   * own writes); if it throws, they are undone and nothing reaches disk or events.
   */
  transact<T>(fn: (tx: Tx) => T): T {
    if (this.replica) throw new Error('this database is a replica of the pool master\'s: only replication writes it');
    if (this.pending) return fn(this.tx); // nested: part of the outer transaction
    return this.committed(() => fn(this.tx));
  }

  /**
   * Runs `change` with a fresh change list, then writes the changes to disk
   * and publishes them as events; if anything throws they are undone in memory
   * and nothing reaches disk or events.
   */
  private committed<T>(change: () => T): T {
    const pending: Pending[] = [];
    this.pending = pending;
    let result: T;
    try {
      result = change();
      this.persist(pending);
    } catch (e) {
      this.undo(pending);
      this.pending = null;
      throw e;
    }
    this.pending = null;
    this.publish(pending);
    return result;
  }

  private readonly tx: Tx = {
    get: (cls, ref) => this.get(cls, ref),
    create: (cls, fields, ref) => this.create(cls, fields, ref),
    update: (cls, ref, patch) => typed(this.update(cls, ref, patch))!,
    delete: (cls, ref) => this.remove(cls, ref),
    getAny: (cls, ref) => this.getAny(cls, ref),
    createAny: (cls, fields, ref) => this.create(cls, fields, ref),
    updateAny: (cls, ref, patch) => this.update(cls, ref, patch),
    deleteAny: (cls, ref) => this.remove(cls, ref),
  };

  private track(cls: string, ref: string, op: EventOp, before: DbRecord | undefined): void {
    if (!this.pending) throw new Error('database change outside a transaction');
    this.pending.push({ cls, ref, op, before });
  }

  private create(clsName: string, fields: Readonly<Record<string, unknown>>, ref = newRef()): string {
    const cls = getClass(clsName);
    if (!cls) throw new Error(`no such class: ${clsName}`);
    const table = this.table(clsName);
    if (table.has(ref)) throw new XenApiError('DB_UNIQUENESS_CONSTRAINT_VIOLATION', clsName, 'ref', ref);
    const rec = defaultRecord(cls);
    for (const [k, v] of Object.entries(fields)) {
      if (!cls.hasField(k)) throw new Error(`${clsName} has no field ${k}`);
      if (v !== undefined) rec[k] = v; // a field left undefined keeps its default
    }
    if (cls.hasField('uuid')) {
      if (!rec.uuid) rec.uuid = randomUUID();
      const uuids = this.uuidIndex.get(clsName)!;
      if (uuids.has(rec.uuid as string)) throw new XenApiError('DB_UNIQUENESS_CONSTRAINT_VIOLATION', clsName, 'uuid', String(rec.uuid));
      uuids.set(rec.uuid as string, ref);
    }
    this.track(clsName, ref, 'add', undefined);
    table.set(ref, Object.freeze(rec));
    this.relink(clsName, ref, undefined, rec);
    return ref;
  }

  private update(cls: string, ref: string, patch: Readonly<Record<string, unknown>>): DbRecord {
    const table = this.table(cls);
    const before = table.get(ref);
    if (!before) throw new XenApiError('HANDLE_INVALID', cls, ref);
    const model = getClass(cls)!;
    for (const k of Object.keys(patch)) if (!model.hasField(k)) throw new Error(`${cls} has no field ${k}`);
    const after = Object.freeze({ ...before, ...patch });
    this.track(cls, ref, 'mod', before);
    table.set(ref, after);
    this.relink(cls, ref, before, after);
    return after;
  }

  private remove(cls: string, ref: string): void {
    const table = this.table(cls);
    const before = table.get(ref);
    if (!before) throw new XenApiError('HANDLE_INVALID', cls, ref);
    this.track(cls, ref, 'del', before);
    table.delete(ref);
    if (typeof before.uuid === 'string') this.uuidIndex.get(cls)!.delete(before.uuid);
    this.relink(cls, ref, before, undefined);
  }

  /** Keeps owners' child sets in step with a child's ref fields. */
  private relink(cls: string, ref: string, before: DbRecord | undefined, after: DbRecord | undefined): void {
    for (const r of RELATIONS_BY_CHILD.get(cls) ?? []) {
      const was = before?.[r.child.field] as string | undefined;
      const now = after?.[r.child.field] as string | undefined;
      if (was === now) continue;
      const edit = (owner: string | undefined, change: (set: string[]) => string[]): void => {
        const rec = owner ? this.getAny(r.owner.cls, owner) : undefined;
        if (!rec) return;
        this.update(r.owner.cls, owner!, { [r.owner.field]: change(rec[r.owner.field] as string[]) });
      };
      edit(was, (set) => set.filter((x) => x !== ref));
      edit(now, (set) => (set.includes(ref) ? set : [...set, ref]));
    }
  }

  private undo(changes: Pending[]): void {
    for (let i = changes.length - 1; i >= 0; i--) {
      const { cls, ref, op, before } = changes[i];
      const table = this.table(cls);
      const uuids = this.uuidIndex.get(cls)!;
      const now = table.get(ref);
      if (op === 'add') {
        table.delete(ref);
        if (typeof now?.uuid === 'string') uuids.delete(now.uuid);
      } else {
        table.set(ref, before!);
        if (typeof before!.uuid === 'string') uuids.set(before!.uuid, ref);
      }
    }
  }

  private persist(changes: Pending[]): void {
    if (changes.length === 0) return;
    const seen = new Set<string>();
    const write = this.sql.transaction(() => {
      for (let i = changes.length - 1; i >= 0; i--) {
        const { cls, ref } = changes[i];
        if (seen.has(ref)) continue; // only the final state of each row matters
        seen.add(ref);
        const stmts = this.statements.get(cls);
        if (!stmts) continue; // not a persistent class
        const rec = this.getAny(cls, ref);
        if (!rec) stmts.remove.run(ref);
        else {
          const model = getClass(cls)!;
          stmts.upsert.run(ref, ...model.fields.map((f) => encodeColumn(f.type, rec[f.name])));
        }
      }
    });
    write();
  }

  private publish(changes: Pending[]): void {
    this.events.append(
      changes.map(({ cls, ref, op, before }) => ({
        cls,
        ref,
        op,
        snapshot: op === 'del' ? before! : this.getAny(cls, ref) ?? before!,
      })),
    );
  }

  /** Makes the database a read-only replica (a pool member's) or writable again (a master's). */
  setReplica(on: boolean): void {
    this.replica = on;
  }

  get isReplica(): boolean {
    return this.replica;
  }

  /**
   * Replication: rows as the master has them (null: deleted there), written
   * as they are — owners' sets come with the owners, so no relinking — in one
   * transaction, then published as events. `full`: the rows are the whole
   * database, and every persistent row not among them is deleted.
   */
  applyReplicated(rows: readonly ReplicatedRow[], full: boolean): void {
    if (this.pending) throw new Error('replication inside a transaction');
    this.committed(() => {
      const seen = new Set<string>();
      for (const { cls, ref, rec } of rows) {
        seen.add(ref);
        this.putRow(cls, ref, rec);
      }
      if (full) {
        for (const cls of MODEL) {
          if (!cls.decl.persistent) continue;
          for (const ref of [...this.table(cls.name).keys()]) if (!seen.has(ref)) this.putRow(cls.name, ref, null);
        }
      }
    });
  }

  private putRow(clsName: string, ref: string, rec: DbRecord | null): void {
    const cls = getClass(clsName);
    if (!cls?.decl.persistent) throw new Error(`not a replicated class: ${clsName}`);
    const table = this.table(clsName);
    const uuids = this.uuidIndex.get(clsName)!;
    const before = table.get(ref);
    if (rec === null) {
      if (!before) return;
      this.track(clsName, ref, 'del', before);
      table.delete(ref);
      if (typeof before.uuid === 'string') uuids.delete(before.uuid);
      return;
    }
    const after = defaultRecord(cls);
    for (const f of cls.fields) if (Object.hasOwn(rec, f.name)) after[f.name] = rec[f.name];
    this.track(clsName, ref, before ? 'mod' : 'add', before);
    if (typeof before?.uuid === 'string') uuids.delete(before.uuid);
    table.set(ref, Object.freeze(after));
    if (typeof after.uuid === 'string') uuids.set(after.uuid, ref);
  }

  close(): void {
    this.sql.close();
  }
}

/** One row as replication carries it: its latest state, or null once deleted. */
export interface ReplicatedRow {
  readonly cls: string;
  readonly ref: string;
  readonly rec: DbRecord | null;
}
