/**
 * Changing the pool's master, as xapi's pool transitions do:
 *   pool.designate_new_master (on the master): the chosen member catches up
 *     with the master's database and becomes master, the others follow it,
 *     and the old master becomes a member of it;
 *   pool.emergency_transition_to_master (on a member, its master gone): it
 *     becomes master with its replica of the database;
 *   pool.emergency_reset_master (on a member): it follows the master at an
 *     address; a master told so becomes a member (an old master back);
 *   pool.recover_slaves (on a new master): tells every other host to follow it.
 * With HA on, the etcd election decides instead (ha/service.ts), with the
 * same steps. A host that becomes master or member restarts in place; one
 * that follows a new master keeps running. Every host pins the others by the
 * pool's certificate bundle (certs.ts).
 */
import { XenApiError } from '../datamodel/api-error.ts';
import type { Services } from '../messages/context.ts';
import { certificateOf, readBundle } from './certs.ts';
import { addressHost, peerCall, peerCertificate, type Peer } from './channel.ts';
import type { Membership } from './membership.ts';
import { writeRole } from './role.ts';

export const MASTER_ROUTE = '/pool/master';

/** What a host is told on the channel about the pool's master. */
export type MasterChange =
  /** Become master once the replica holds the old master's generation (designate_new_master). */
  | { readonly op: 'promote'; readonly epoch: string; readonly generation: number }
  /** Follow the master at this address (recover_slaves, designate_new_master). */
  | { readonly op: 'follow'; readonly master: string };

const isText = (v: unknown, max = 256): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;

export function checkMasterChange(body: unknown): MasterChange {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  if (b.op === 'promote' && isText(b.epoch) && Number.isSafeInteger(b.generation)) return { op: 'promote', epoch: b.epoch, generation: Number(b.generation) };
  if (b.op === 'follow' && isText(b.master)) return { op: 'follow', master: b.master };
  throw new XenApiError('INVALID_VALUE', 'op', 'malformed master change');
}

/** How long a designated member may take to catch up with the old master's database. */
const CATCH_UP_MS = 30_000;

const myUuid = (services: Services): string => services.store.must('host', services.hostRef()).uuid;

/**
 * The certificate of the host at `address`, from the pool's bundle: the host
 * the database knows at that address, else whichever host of the bundle
 * presents it there. An address no pool host answers is refused.
 */
export async function certificateAt(services: Services, address: string): Promise<string> {
  const self = myUuid(services);
  const named = services.store.where('host', (h) => h.address !== '' && addressHost(h.address) === addressHost(address));
  for (const [, h] of named) {
    const cert = certificateOf(services.dataDir, self, h.uuid);
    if (cert) return cert;
  }
  const presented = await peerCertificate(address, 10_000).catch(() => {
    throw new XenApiError('CANNOT_CONTACT_HOST', address);
  });
  const norm = (pem: string): string => pem.replace(/\s+/g, '');
  if (!Object.values(readBundle(services.dataDir, self)).some((pem) => norm(pem) === norm(presented))) {
    throw new XenApiError('INVALID_VALUE', 'master_address', `${address} is not a host of this pool`);
  }
  return presented;
}

/** This host becomes the pool master with the database it holds: it restarts as one. */
export function becomeMaster(services: Services, m: Membership): void {
  if (m.role.role === 'master') return;
  void m.replica?.stop();
  writeRole(services.dataDir, { role: 'master', secret: m.role.secret, host: m.role.host });
  services.log.warn('becoming the pool master: restarting');
  services.restart?.();
}

/** This host follows the master at `address`: a member switches at once, a master becomes a member by restarting. */
export async function followMaster(services: Services, m: Membership, address: string): Promise<void> {
  const cert = await certificateAt(services, address);
  if (m.role.role === 'member') {
    m.follow(address, cert);
    return;
  }
  writeRole(services.dataDir, { role: 'member', master: address, masterCert: cert, secret: m.role.secret, host: services.hostRef() });
  services.log.warn({ master: address }, 'another host is the pool master: restarting as its member');
  services.restart?.();
}

/** A member's side of the channel route. */
export async function serveMasterChange(services: Services, m: Membership, req: MasterChange): Promise<null> {
  if (req.op === 'follow') {
    await followMaster(services, m, req.master);
    return null;
  }
  if (m.role.role === 'master') return null; // already master (a repeated request)
  await m.replica?.reached(req.epoch, req.generation, CATCH_UP_MS).catch(() => {
    throw new XenApiError('CANNOT_CONTACT_HOST', services.hostRef());
  });
  becomeMaster(services, m);
  return null;
}

/** pool.designate_new_master on the master. */
export async function designateNewMaster(services: Services, m: Membership, host: string, peerOf: (host: string) => Peer, handOver: (address: string) => void): Promise<void> {
  const { store } = services;
  if (m.role.role !== 'master' || !m.source) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
  if (host === services.hostRef()) return; // xapi: nothing to do on the master itself
  if (store.must('pool', services.poolRef()).ha_enabled) throw new XenApiError('HA_IS_ENABLED');
  const address = store.must('host', host).address;
  const peer = peerOf(host);
  // from here new calls go to the new master; the database the new master takes is the one as of now
  handOver(address);
  try {
    await new Promise((r) => setTimeout(r, 100)); // calls already running finish their writes
    await peerCall(peer, MASTER_ROUTE, { op: 'promote', epoch: m.source.epoch, generation: store.events.current } satisfies MasterChange, CATCH_UP_MS + 5000);
  } catch (e) {
    handOver('');
    throw e instanceof XenApiError && e.code !== 'INTERNAL_ERROR' ? e : new XenApiError('CANNOT_CONTACT_HOST', host);
  }
  for (const [other] of store.all('host')) {
    if (other === host || other === services.hostRef()) continue;
    await peerCall(peerOf(other), MASTER_ROUTE, { op: 'follow', master: address } satisfies MasterChange, 15_000).catch((err: unknown) =>
      services.log.warn({ err, host: other }, 'a member did not hear of the new master: pool.recover_slaves on it will tell it'),
    );
  }
  await followMaster(services, m, address);
}

/** pool.recover_slaves on a (new) master: every other host is told to follow it; the hosts that did are returned. */
export async function recoverSlaves(services: Services, peerOf: (host: string) => Peer): Promise<string[]> {
  const { store } = services;
  const me = services.hostRef();
  const address = store.must('host', me).address;
  const recovered: string[] = [];
  for (const [host] of store.all('host')) {
    if (host === me) continue;
    try {
      await peerCall(peerOf(host), MASTER_ROUTE, { op: 'follow', master: address } satisfies MasterChange, 15_000);
      recovered.push(host);
    } catch (err) {
      services.log.warn({ err, host }, 'a host could not be told to follow this master');
    }
  }
  return recovered;
}
