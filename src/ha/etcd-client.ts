/**
 * etcd as HA reaches it: one client per member, the host's own member first,
 * and failover done here — not the library's, whose retries (three, each with
 * its own deadline) and circuit breaker (5 s) would let one dead member delay
 * a survivor for seconds. Every call has a deadline (the library has none, so
 * a partitioned member could hang a call for ever); large messages are
 * allowed (the redo log's snapshot); there are no watches (their reconnection
 * back-off reaches 30 s: HA polls instead).
 */
import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';

/** How long one etcd call to one member may take before the next member is asked. */
export const CALL_DEADLINE_MS = 1500;
const MAX_MESSAGE_BYTES = 64 << 20;

function memberClient(endpoint: string): Etcd3 {
  return new Etcd3({
    hosts: [endpoint],
    dialTimeout: 1000,
    defaultCallOptions: () => ({ deadline: Date.now() + CALL_DEADLINE_MS }),
    faultHandling: { host: () => noop, global: noop },
    grpcOptions: {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      // reconnect to a member that comes back within a second, not after grpc's back-off of up to 2 minutes
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 1000,
    },
  });
}

/** An error that is etcd's answer, not a failure to reach it: asking another member changes nothing. */
const isAnswer = (err: unknown): boolean => err instanceof Error && err.name === 'EtcdLeaseInvalidError';

export class EtcdEndpoints {
  readonly clients: readonly Etcd3[];
  private preferred = 0;

  /** `endpoints`: client URLs, the host's own member first. */
  constructor(readonly endpoints: readonly string[]) {
    if (endpoints.length === 0) throw new Error('no etcd endpoints');
    this.clients = endpoints.map(memberClient);
  }

  /**
   * Runs `op` against the member that answered last, then each other in turn
   * until one answers. Operations must be safe to repeat (HA's are
   * transactions whose comparisons make a repeat harmless, or reads).
   */
  async call<T>(op: (client: Etcd3) => Promise<T>): Promise<T> {
    let last: unknown;
    for (let i = 0; i < this.clients.length; i++) {
      const k = (this.preferred + i) % this.clients.length;
      try {
        const result = await op(this.clients[k]);
        this.preferred = k;
        return result;
      } catch (err) {
        if (isAnswer(err)) throw err;
        last = err;
      }
    }
    throw last;
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}

/** A monotonic clock in nanoseconds (CLOCK_MONOTONIC: the same in every process of the machine). */
export const monotonicNs = (): bigint => process.hrtime.bigint();
