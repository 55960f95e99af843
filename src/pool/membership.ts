/**
 * What this daemon is in its pool, decided before anything else touches the
 * database: a master (the database is its own) or a member (the database is
 * a read-only replica that follows the master's; this host's identity is the
 * host record the master admitted).
 */
import type { Logger } from 'pino';
import type { Store } from '../db/store.ts';
import type { MemberInfo } from '../messages/context.ts';
import type { Identity } from './first-start.ts';
import { Replica, ReplicationSource } from './replication.ts';
import { readRole, writeRole, type PoolRole } from './role.ts';

/** How long a starting member waits for its first copy of the master's database before serving the last one it had. */
const FIRST_COPY_MS = 15_000;

export interface Membership {
  readonly role: PoolRole;
  /** Set on a member: its identity in the pool (the master's database names it). */
  readonly identity?: Identity;
  readonly member?: MemberInfo;
  readonly replica?: Replica;
  /** Set on a master: what members replicate from. */
  readonly source?: ReplicationSource;
  close(): Promise<void>;
}

const memberships = new WeakMap<Store, Membership>();

/** The membership a store was opened with (the pool plugin serves its routes from it). */
export function membershipOf(store: Store): Membership | undefined {
  return memberships.get(store);
}

export async function openMembership(dataDir: string, store: Store, log: Logger): Promise<Membership> {
  let role = readRole(dataDir);
  let m: Membership;
  if (role.role === 'master' && role.reset) {
    // back from a pool: its records go, first start makes this host a pool of one again
    store.applyReplicated([], true);
    role = writeRole(dataDir, { role: 'master', secret: role.secret });
    log.info('left the pool: starting afresh as a pool of one');
  }
  if (role.role === 'master') {
    store.setReplica(false);
    m = { role, source: new ReplicationSource(store), close: async () => undefined };
  } else {
    store.setReplica(true);
    const replica = new Replica(store, () => ({ address: role.master, cert: role.masterCert, secret: role.secret }), log.child({ subsystem: 'replica' }));
    await replica.start(FIRST_COPY_MS);
    const identity: Identity = {
      host: role.host,
      get pool() {
        return store.refs('pool')[0];
      },
    };
    log.info({ master: role.master, host: role.host }, 'pool member: following the master');
    m = { role, identity, member: { master: role.master }, replica, close: () => replica.stop() };
  }
  memberships.set(store, m);
  return m;
}
