/**
 * Database replication, master → members, over the host-to-host channel.
 * A member asks with the master's epoch (one per master process) and the
 * last generation it applied; it gets every row changed since (each once, in
 * its latest state, from the event log), or the whole database when it is
 * new, the master restarted, or the log forgot deletions it would need. An
 * answer is one consistent generation: the member applies it in one
 * transaction. With nothing new, the master holds the request for a while.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { getClass, MODEL } from '../datamodel/model.ts';
import type { ReplicatedRow, Store } from '../db/store.ts';
import { bundleDigest, checkBundle, type CertBundle } from './certs.ts';
import { peerCall, type Peer } from './channel.ts';

export interface ReplicationAsk {
  readonly epoch: string;
  readonly since: number;
  readonly waitMs: number;
  /** The digest of the certificate bundle the member holds ('' for none). */
  readonly certs: string;
}

export interface ReplicationBatch {
  readonly epoch: string;
  readonly generation: number;
  readonly full: boolean;
  readonly rows: ReplicatedRow[];
  /** The pool's certificate bundle, when the member's differs. */
  readonly certs?: CertBundle;
}

const persistent = (cls: string): boolean => getClass(cls)?.decl.persistent === true;

/** The master's side: answers members' asks from its store. */
export class ReplicationSource {
  readonly epoch = randomUUID();

  constructor(
    private readonly store: Store,
    /** The pool's certificate bundle as the master holds it now. */
    private readonly bundle: () => CertBundle = () => ({}),
  ) {}

  async answer(ask: ReplicationAsk, signal: AbortSignal): Promise<ReplicationBatch> {
    const { events } = this.store;
    const bundle = this.bundle();
    const certs = bundleDigest(bundle) === ask.certs ? {} : { certs: bundle };
    const fresh = ask.epoch === this.epoch && ask.since <= events.current && !events.isStale(ask.since);
    if (!fresh) return { ...this.full(), ...certs };
    if (ask.since === events.current && ask.waitMs > 0 && !certs.certs) await events.wait(null, Math.min(ask.waitMs, 60_000), signal);
    const generation = events.current;
    const rows = events.since(ask.since, null)
      .filter((c) => persistent(c.cls))
      .map((c): ReplicatedRow => ({ cls: c.cls, ref: c.ref, rec: c.op === 'del' ? null : c.snapshot }));
    return { epoch: this.epoch, generation, full: false, rows, ...certs };
  }

  private full(): ReplicationBatch {
    const rows: ReplicatedRow[] = [];
    for (const cls of MODEL) {
      if (!cls.decl.persistent) continue;
      for (const [ref, rec] of this.store.allAny(cls.name)) rows.push({ cls: cls.name, ref, rec });
    }
    return { epoch: this.epoch, generation: this.store.events.current, full: true, rows };
  }
}

/** Checks a batch as it arrives (the peer is authenticated, but its bytes are still input). */
function checkBatch(v: unknown): ReplicationBatch {
  const b = v as Partial<ReplicationBatch> | null;
  if (!b || typeof b.epoch !== 'string' || typeof b.generation !== 'number' || typeof b.full !== 'boolean' || !Array.isArray(b.rows)) {
    throw new Error('malformed replication batch');
  }
  for (const r of b.rows) {
    if (!r || typeof r.cls !== 'string' || !persistent(r.cls) || typeof r.ref !== 'string' || (r.rec !== null && typeof r.rec !== 'object')) {
      throw new Error('malformed replicated row');
    }
  }
  return { epoch: b.epoch, generation: b.generation, full: b.full, rows: b.rows, ...(b.certs === undefined ? {} : { certs: checkBundle(b.certs) }) };
}

/** A member's side: follows the master, applying what it sends, until stopped. */
export class Replica {
  private epoch = '';
  private generation = 0;
  private certs = '';
  private stopped = false;
  private waiters = new Set<() => void>();
  private loop?: Promise<void>;
  /** When the master last answered (ms since epoch; 0: never). */
  lastContact = 0;

  constructor(
    private readonly store: Store,
    private readonly master: () => Peer,
    private readonly log: Logger,
    /** Keeps the pool's certificate bundle when the master sends a new one. */
    private readonly onCerts: (bundle: CertBundle) => void = () => undefined,
  ) {}

  /** Starts following; resolves after the first full copy, or after `firstWithinMs` without one. */
  async start(firstWithinMs: number): Promise<void> {
    this.loop = this.run();
    await this.reached(this.epoch, 1, firstWithinMs).catch(() => this.log.warn('no copy of the master\'s database yet: serving the last one'));
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        const ask: ReplicationAsk = { epoch: this.epoch, since: this.generation, waitMs: 20_000, certs: this.certs };
        const batch = checkBatch(await peerCall(this.master(), '/pool/replicate', ask, 45_000));
        if (this.stopped) return;
        this.store.applyReplicated(batch.rows, batch.full);
        if (batch.certs) {
          this.onCerts(batch.certs);
          this.certs = bundleDigest(batch.certs);
        }
        this.epoch = batch.epoch;
        this.generation = batch.generation;
        this.lastContact = Date.now();
        failures = 0;
        for (const wake of this.waiters) wake();
      } catch (err) {
        if (this.stopped) return;
        if (failures++ === 0) this.log.warn({ err }, 'replication from the master failed; retrying');
        // at most a second apart: a new master (after a master change) is found quickly
        await new Promise((r) => setTimeout(r, Math.min(1000, 200 * failures)));
      }
    }
  }

  /** Where this replica stands: the master's epoch and generation it has applied. */
  get position(): { epoch: string; generation: number } {
    return { epoch: this.epoch, generation: this.generation };
  }

  /**
   * Resolves once the replica holds the master's generation `generation` of
   * `epoch` (any epoch when '' — the first copy); rejects after `ms`.
   */
  reached(epoch: string, generation: number, ms: number): Promise<void> {
    const ok = (): boolean => this.epoch !== '' && (epoch === '' || (this.epoch === epoch && this.generation >= generation));
    if (ok()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const wake = (): void => {
        if (!ok()) return;
        clearTimeout(timer);
        this.waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(wake);
        reject(new Error(`the replica did not reach generation ${generation} within ${ms} ms`));
      }, ms);
      this.waiters.add(wake);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    // the loop ends after its current ask (at most the long-poll)
    this.loop = undefined;
  }
}
