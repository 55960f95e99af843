/**
 * Master election as an etcd election: the master key, created only where
 * it does not exist and bound to the winner's lease. Its creation revision
 * names one term: every write a master makes as master (the redo log, run
 * locks) is a transaction that compares it, so a deposed master — whose key
 * vanished with its lease, or was taken over — cannot write. The key is
 * polled, not watched (the library's watch back-off reaches 30 s).
 */
import type { EtcdEndpoints } from './etcd-client.ts';

/** One master's term. */
export interface Term {
  readonly host: string;
  /** The master key's creation revision (decimal). */
  readonly revision: string;
}

export interface ElectionOptions {
  readonly etcd: EtcdEndpoints;
  readonly key: string;
  readonly hostUuid: string;
  /** This host's lease (decimal id): the master key lives and dies with it. */
  readonly leaseId: () => string;
  /** Whether this host may stand (its lease is alive, it is not fenced, HA is on). */
  readonly eligible: () => boolean;
  readonly pollMs?: number;
  /** The term changed: a new master (maybe this host), or none for now. */
  readonly onTerm: (term: Term | undefined) => void;
}

export class Election {
  private current: Term | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly o: ElectionOptions) {}

  get term(): Term | undefined {
    return this.current;
  }

  get isMaster(): boolean {
    return this.current?.host === this.o.hostUuid;
  }

  start(): void {
    void this.poll();
  }

  /** Reads the master key; stands when there is none. */
  async poll(): Promise<Term | undefined> {
    try {
      const kv = (await this.o.etcd.call((c) => c.get(this.o.key).exec())).kvs[0];
      let term: Term | undefined = kv ? { host: kv.value.toString(), revision: kv.create_revision } : undefined;
      if (!term && this.o.eligible()) term = await this.campaign();
      this.set(term);
    } catch {
      // etcd unreachable: the term is unknown, and our own liveness deadline decides what we may do
    }
    if (!this.stopped) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.poll(), this.o.pollMs ?? 250);
    }
    return this.current;
  }

  /** Creates the master key if no one holds it; the holder's term either way. */
  private async campaign(): Promise<Term | undefined> {
    const res = await this.o.etcd.call((c) =>
      c.if(this.o.key, 'Create', '==', 0).then(c.put(this.o.key).value(this.o.hostUuid).lease(this.o.leaseId())).else(c.get(this.o.key)).commit(),
    );
    if (res.succeeded) return { host: this.o.hostUuid, revision: res.header.revision };
    const kv = res.responses[0]?.response_range?.kvs[0];
    return kv ? { host: kv.value.toString(), revision: kv.create_revision } : undefined;
  }

  private set(term: Term | undefined): void {
    if (term?.host === this.current?.host && term?.revision === this.current?.revision) return;
    this.current = term;
    this.o.onTerm(term);
  }

  /** Gives the term up (HA disabled, clean shutdown): deletes the key if it is still this term's. */
  async resign(): Promise<void> {
    const term = this.current;
    if (!term || term.host !== this.o.hostUuid) return;
    await this.o.etcd.call((c) => c.if(this.o.key, 'Create', '==', term.revision).then(c.delete().key(this.o.key)).commit());
    this.set(undefined);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
