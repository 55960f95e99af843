/**
 * pool.join, on the joining host: xapi's checks of this host, a login to the
 * master (whose certificate is pinned from then on), the checks of the pair,
 * then the master admits this host's records (admission.ts) and hands over
 * the pool secret. This host then restarts as a member: its database becomes
 * a replica of the master's.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { XenApiClient, XenApiClientError } from '../client/client.ts';
import { XenApiError } from '../datamodel/api-error.ts';
import { ERRORS, type ErrorCode } from '../datamodel/errors.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';
import { API_VERSION } from '../host/software-version.ts';
import type { CallContext } from '../messages/context.ts';
import { agentFor, parseAddress, peerCertificate, request, unwrap } from './channel.ts';
import { writeRole } from './role.ts';
import type { ImportedRow, JoinRequest } from './admission.ts';

const CONNECT_TIMEOUT_MS = 15_000;

/** xapi's checks of the joining host itself (pre_join_checks, the local half). */
function checkJoiningHost(store: Store, host: string): void {
  if (store.count('host') > 1) throw new XenApiError('JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS');
  const vms = store.where('VM', (v) => !v.is_control_domain);
  if (vms.some(([, v]) => v.power_state === 'Running' || v.power_state === 'Paused')) throw new XenApiError('JOINING_HOST_CANNOT_HAVE_RUNNING_VMS');
  if (store.where('VM', (v) => Object.keys(v.current_operations).length > 0).length) throw new XenApiError('JOINING_HOST_CANNOT_HAVE_VMS_WITH_CURRENT_OPERATIONS');
  if (store.where('SR', (s) => s.shared && !s.is_tools_sr).length) throw new XenApiError('JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS');
  if (store.count('Bond') > 0) throw new XenApiError('POOL_JOINING_HOST_HAS_BONDS');
  if (store.count('tunnel') > 0) throw new XenApiError('POOL_JOINING_HOST_HAS_TUNNELS');
  const management = new Set(store.where('PIF', (p) => p.host === host && p.management).map(([r]) => r));
  if (store.where('VLAN', (v) => !management.has(v.untagged_PIF)).length) throw new XenApiError('POOL_JOINING_HOST_HAS_NON_MANAGEMENT_VLANS');
}

/** The records this host brings: itself, its NICs and their networks, its local storage and VMs (templates that ship with every host stay behind). */
export function exportHostRecords(store: Store, host: string): ImportedRow[] {
  const rows: ImportedRow[] = [];
  const add = (cls: string, ref: string): void => {
    const rec = store.getAny(cls, ref);
    if (rec && ref !== NULL_REF && !rows.some((r) => r.ref === ref)) rows.push({ cls, ref, rec: { ...rec } });
  };
  const hostRec = store.must('host', host);
  add('host_metrics', hostRec.metrics);
  add('host', host);
  for (const c of hostRec.host_CPUs) add('host_cpu', c);
  const pifs = store.where('PIF', (p) => p.host === host);
  const vms = store.where('VM', (v) => !v.is_default_template);
  for (const [, p] of pifs) add('network', p.network);
  for (const [, vm] of vms) for (const vif of vm.VIFs) add('network', store.get('VIF', vif)?.network ?? NULL_REF);
  for (const [ref, p] of pifs) {
    add('PIF_metrics', p.metrics);
    add('PIF', ref);
  }
  for (const [ref, v] of store.all('VLAN')) if (pifs.some(([p]) => p === v.untagged_PIF)) add('VLAN', ref);
  for (const pbd of hostRec.PBDs) {
    const rec = store.get('PBD', pbd);
    if (!rec) continue;
    add('SR', rec.SR);
    add('PBD', pbd);
    for (const vdi of store.get('SR', rec.SR)?.VDIs ?? []) add('VDI', vdi);
  }
  for (const [ref, vm] of vms) {
    add('VM_metrics', vm.metrics);
    add('VM_guest_metrics', vm.guest_metrics);
    add('VM', ref);
    for (const vbd of vm.VBDs) add('VBD', vbd);
    for (const vif of vm.VIFs) add('VIF', vif);
    for (const c of vm.consoles) add('console', c);
  }
  return rows;
}

const isErrorCode = (code: string): code is ErrorCode => Object.hasOwn(ERRORS, code);

/** A client error from the master, as this host's own failure. */
function asApiError(e: unknown): XenApiError {
  if (e instanceof XenApiError) return e;
  if (e instanceof XenApiClientError && isErrorCode(e.code)) return new XenApiError(e.code, ...e.params);
  return new XenApiError('JOINING_HOST_CONNECTION_FAILED');
}

export async function joinPool(ctx: CallContext, masterAddress: string, user: string, password: string, force: boolean): Promise<void> {
  const { services } = ctx;
  const { store } = services;
  const me = services.hostRef();
  parseAddress(masterAddress);
  checkJoiningHost(store, me);
  const cert = await peerCertificate(masterAddress, CONNECT_TIMEOUT_MS).catch(() => {
    throw new XenApiError('JOINING_HOST_CONNECTION_FAILED');
  });
  const { host, port } = parseAddress(masterAddress);
  const client = new XenApiClient(`https://${host.includes(':') ? `[${host}]` : host}:${port}`, { agent: agentFor(cert), timeoutMs: CONNECT_TIMEOUT_MS });
  let session: string;
  try {
    session = await client.login(user, password);
  } catch (e) {
    client.close();
    throw asApiError(e);
  }
  try {
    const [masterHost] = await client.api.host.get_all();
    const master = await client.api.host.get_record(masterHost);
    const [major, minor] = [Number(master.API_version_major), Number(master.API_version_minor)];
    if (major !== API_VERSION.major || minor !== API_VERSION.minor) {
      throw new XenApiError('POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION', `${API_VERSION.major}.${API_VERSION.minor}`, `${major}.${minor}`);
    }
    const body: JoinRequest = {
      records: exportHostRecords(store, me),
      certificate: readFileSync(join(services.dataDir, 'xenon-cert.pem'), 'utf8'),
      force,
    };
    const reply = await request({ address: masterAddress, cert, headers: { Cookie: `session_id=${encodeURIComponent(session)}` } }, 'POST', '/pool/join', body, 60_000);
    const admitted = unwrap(reply) as { secret?: unknown };
    if (typeof admitted?.secret !== 'string') throw new XenApiError('JOINING_HOST_SERVICE_FAILED');
    writeRole(services.dataDir, { role: 'member', master: masterAddress, masterCert: cert, secret: admitted.secret, host: me });
  } catch (e) {
    throw asApiError(e);
  } finally {
    await client.api.session.logout().catch(() => undefined);
    client.close();
  }
  services.log.info({ master: masterAddress }, 'joined a pool: restarting as a member');
  services.restart?.();
}
