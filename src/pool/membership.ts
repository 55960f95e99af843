/**
 * What this daemon is in its pool, decided before anything else touches the
 * database: a master (the database is its own) or a member (the database is
 * a read-only replica that follows the master's; this host's identity is the
 * host record the master admitted). A member may be pointed at another
 * master while it runs (a master change); becoming or ceasing to be master
 * restarts the daemon (master-change.ts).
 */
import type { Logger } from 'pino';
import type { Store } from '../db/store.ts';
import type { MemberInfo } from '../messages/context.ts';
import { readBundle, saveBundle } from './certs.ts';
import type { Identity } from './first-start.ts';
import { Replica, ReplicationSource } from './replication.ts';
import { readRole, writeRole, type MemberRole, type PoolRole } from './role.ts';

/** How long a starting member waits for its first copy of the master's database before serving the last one it had. */
const FIRST_COPY_MS = 15_000;

export interface Membership {
  /** The role as it is now (a member's master may change while it runs). */
  readonly role: PoolRole;
  /** Set on a member: its identity in the pool (the master's database names it). */
  readonly identity?: Identity;
  /** This host's record when the role names it (members, and members that became master). */
  readonly self?: string;
  readonly member?: MemberInfo;
  readonly replica?: Replica;
  /** Set on a master: what members replicate from. */
  readonly source?: ReplicationSource;
  /** A member follows another master from now on (recorded in pool.json). */
  follow(master: string, masterCert: string): void;
  /** A master handing over to the member at `address` ('' to take it back): calls are answered HOST_IS_SLAVE. */
  handOver(address: string): void;
  close(): Promise<void>;
}

const memberships = new WeakMap<Store, Membership>();

/** The membership a store was opened with (the pool plugin serves its routes from it). */
export function membershipOf(store: Store): Membership | undefined {
  return memberships.get(store);
}

const hostUuid = (store: Store, host: string): string => store.get('host', host)?.uuid ?? '';

export async function openMembership(dataDir: string, store: Store, log: Logger): Promise<Membership> {
  let role = readRole(dataDir);
  if (role.role === 'master' && role.reset) {
    // back from a pool: its records go, first start makes this host a pool of one again
    store.applyReplicated([], true);
    role = writeRole(dataDir, { role: 'master', secret: role.secret });
    log.info('left the pool: starting afresh as a pool of one');
  }
  const m = role.role === 'master' ? openMaster(dataDir, store, role, log) : await openMember(dataDir, store, role, log);
  memberships.set(store, m);
  return m;
}

function openMaster(dataDir: string, store: Store, role: PoolRole & { role: 'master' }, log: Logger): Membership {
  store.setReplica(false);
  const self = role.host !== undefined && store.get('host', role.host) ? role.host : undefined;
  const pool = store.refs('pool')[0];
  if (self && pool && store.must('pool', pool).master !== self) {
    // a member that became master: the pool's records say so from now on
    store.transact((tx) => tx.update('pool', pool, { master: self }));
    log.info({ host: self }, 'this host is the pool master now');
  }
  const me = (): string => hostUuid(store, self ?? store.refs('host')[0] ?? '');
  const source = new ReplicationSource(store, () => readBundle(dataDir, me()));
  let handover = '';
  return {
    role, self, source,
    get member() {
      return handover === '' ? undefined : { master: handover };
    },
    follow: () => {
      throw new Error('a master follows no one: it becomes a member by restarting');
    },
    handOver: (address) => {
      handover = address;
    },
    close: async () => undefined,
  };
}

async function openMember(dataDir: string, store: Store, initial: MemberRole, log: Logger): Promise<Membership> {
  let role = initial;
  store.setReplica(true);
  const me = (): string => hostUuid(store, role.host);
  const replica = new Replica(
    store,
    () => ({ address: role.master, cert: role.masterCert, secret: role.secret }),
    log.child({ subsystem: 'replica' }),
    (bundle) => saveBundle(dataDir, me(), bundle),
  );
  await replica.start(FIRST_COPY_MS);
  const identity: Identity = {
    host: role.host,
    get pool() {
      return store.refs('pool')[0];
    },
  };
  log.info({ master: role.master, host: role.host }, 'pool member: following the master');
  return {
    get role() {
      return role;
    },
    identity,
    self: role.host,
    member: {
      get master() {
        return role.master;
      },
    },
    replica,
    follow: (master, masterCert) => {
      role = writeRole(dataDir, { ...role, master, masterCert });
      log.info({ master }, 'pool member: following a new master');
    },
    handOver: () => undefined,
    close: () => replica.stop(),
  };
}
