/**
 * The pool subsystem: membership (join, eject), replication of the database
 * to members, and the routes of the host-to-host channel.
 *   POST /pool/replicate  master: members follow its database (replication.ts)
 *   POST /pool/join       master: admits a joining host (admission.ts), for a pool-admin session
 *   POST /pool/eject      member: told by its master that it leaves the pool
 *   POST /pool/host       member: the typed host interface (host-api.ts), the master's calls
 *   CONNECT|GET /pool/console  member: its domains' consoles and serial logs for the master (console-relay.ts)
 */
import type http from 'node:http';
import type { RouteHandler } from '../api/http.ts';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Services } from '../messages/context.ts';
import { sessionIdOf } from '../messages/http-handlers.ts';
import type { Plugin } from '../server.ts';
import { admitHost, checkJoinRequest } from './admission.ts';
import { answer, hasSecret, readJson, type Peer } from './channel.ts';
import { memberConsoleRoutes, openRemoteConsole, remoteConsoleLog } from './console-relay.ts';
import { ejectHost, forgetPool } from './eject.ts';
import { joinPool } from './join.ts';
import { refreshOthers } from '../messages/tunnel.ts';
import { syncPoolNetworks } from './join-networks.ts';
import { membershipOf, type Membership } from './membership.ts';
import { PoolHosts } from './hosts.ts';
import { checkMasterChange, designateNewMaster, becomeMaster, followMaster, MASTER_ROUTE, recoverSlaves, serveMasterChange } from './master-change.ts';
import { MemberAgent } from './member-agent.ts';
import { memberTransferRoute, remoteExport, remoteImport, TRANSFER_ROUTE } from './member-transfer.ts';
import type { RemoteHost } from './remote-host.ts';
import { peerOfHost } from './peers.ts';
import type { ReplicationAsk } from './replication.ts';

/** A channel route: the outcome of `fn` as the reply, XenAPI errors as such. */
const route =
  (fn: (req: http.IncomingMessage, body: unknown, signal: AbortSignal) => Promise<unknown> | unknown): RouteHandler =>
  async (req, res) => {
    const aborted = new AbortController();
    res.on('close', () => aborted.abort());
    try {
      if (req.method !== 'POST') throw new XenApiError('INVALID_VALUE', 'method', String(req.method));
      answer(res, { result: await fn(req, await readJson(req), aborted.signal) });
    } catch (error) {
      answer(res, { error });
    }
  };

function requireSecret(req: http.IncomingMessage, m: Membership): void {
  if (!hasSecret(req, m.role.secret)) throw new XenApiError('PERMISSION_DENIED', 'the pool secret is required');
}

function requireMaster(m: Membership): void {
  if (m.role.role === 'member') throw new XenApiError('HOST_IS_SLAVE', m.role.master);
}

function checkAsk(body: unknown): ReplicationAsk {
  const b = body as Partial<ReplicationAsk> | null;
  if (!b || typeof b.epoch !== 'string' || !Number.isSafeInteger(b.since) || !Number.isFinite(b.waitMs)) throw new XenApiError('INVALID_VALUE', 'ask', 'malformed');
  return { epoch: b.epoch, since: Number(b.since), waitMs: Math.max(0, Number(b.waitMs)), certs: typeof b.certs === 'string' ? b.certs : '' };
}

export function poolPlugin(): Plugin {
  let hosts: PoolHosts | undefined;
  let agent: MemberAgent | undefined;
  return {
    name: 'pool',
    stop() {
      hosts?.close();
      agent?.close();
    },
    start(services: Services, routes) {
      const m = membershipOf(services.store);
      if (!m) throw new Error('the pool plugin needs the server\'s membership');
      if (m.role.role === 'master') {
        hosts = new PoolHosts(services, m.role.secret, m.source!);
        // the links start once every plugin runs (the members' domain managers need storage and networking in place)
        setImmediate(() => hosts?.start());
      }
      if (m.replica) {
        const memberAgent = new MemberAgent(services, m.replica);
        agent = memberAgent;
        routes.routes.set('/pool/host', route((req, body) => {
          requireSecret(req, m);
          return memberAgent.serve(body);
        }));
      }
      // any host may run VMs for the master (and the master may change): every one serves its domains' consoles to it
      const consoles = memberConsoleRoutes(services, () => m.role.secret);
      routes.connect.set('/pool/console', consoles.connect);
      routes.routes.set('/pool/console', consoles.log);
      routes.routes.set(TRANSFER_ROUTE, memberTransferRoute(services, () => m.role.secret));
      const memberLink = (host: string): RemoteHost => {
        if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
        return hosts.link(host).remote;
      };
      const prepared = new Set<(vm: string, destination: string) => void>();
      const peerOf = (host: string): Peer => {
        if (!services.store.get('host', host)) throw new XenApiError('HOST_OFFLINE', host);
        return peerOfHost(services, m.role.secret)(host);
      };
      routes.routes.set('/pool/replicate', route((req, body, signal) => {
        requireMaster(m);
        requireSecret(req, m);
        return m.source!.answer(checkAsk(body), signal);
      }));
      routes.routes.set('/pool/join', route((req, body) => {
        requireMaster(m);
        const url = new URL(req.url ?? '/', 'http://x');
        const session = services.sessions.check(sessionIdOf(req, url));
        if (!session.isLocalSuperuser && !session.roles.has('pool-admin')) throw new XenApiError('RBAC_PERMISSION_DENIED', 'pool.join', 'joining needs pool-admin on the master');
        const host = admitHost(services, checkJoinRequest(body));
        const synced = syncPoolNetworks(services, host);
        services.log.info({ host, ...synced }, 'a host joined the pool');
        hosts?.link(host);
        return { secret: m.role.secret, host };
      }));
      routes.routes.set(MASTER_ROUTE, route((req, body) => {
        requireSecret(req, m);
        if (services.ha?.armed) throw new XenApiError('HA_IS_ENABLED');
        return serveMasterChange(services, m, checkMasterChange(body));
      }));
      routes.routes.set('/pool/eject', route((req) => {
        if (m.role.role !== 'member') throw new XenApiError('OPERATION_NOT_ALLOWED', 'this host is not a pool member');
        requireSecret(req, m);
        // the master removes this host's records next: the replica stops here, so nothing here loses its own record
        void m.replica?.stop();
        forgetPool(services.dataDir);
        services.log.info('ejected from the pool: restarting as a pool of one');
        services.restart?.();
        return null;
      }));
      services.pool = {
        join: (ctx, address, user, password, force) => {
          if (m.role.role === 'member') throw new XenApiError('HOST_IS_SLAVE', m.role.master);
          return joinPool(ctx, address, user, password, force);
        },
        eject: async (host) => {
          requireMaster(m);
          const tunnelled = services.store.where('PIF', (p) => p.host === host && p.tunnel_access_PIF_of.length > 0).map(([, p]) => p.network);
          await ejectHost(services, m.role.secret, host);
          hosts?.forget(host);
          // the other hosts' tunnels to it go
          for (const network of tunnelled) await refreshOthers(services, network, host);
        },
        xenopsOn: (host) => hosts?.xenopsOn(host),
        createSrOn: async (pbd) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.link(services.store.must('PBD', pbd).host).remote.call('sr.create', { pbd });
        },
        plugOn: async (pbd) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.plug(pbd);
        },
        unplugOn: async (pbd) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.unplug(pbd);
        },
        designateNewMaster: (host) => designateNewMaster(services, m, host, peerOfHost(services, m.role.secret), (address) => m.handOver(address)),
        emergencyTransitionToMaster: () => {
          if (services.ha?.armed) throw new XenApiError('HA_IS_ENABLED');
          becomeMaster(services, m);
        },
        emergencyResetMaster: async (address) => {
          if (services.ha?.armed) throw new XenApiError('HA_IS_ENABLED');
          await followMaster(services, m, address);
        },
        recoverSlaves: () => {
          requireMaster(m);
          return recoverSlaves(services, peerOfHost(services, m.role.secret));
        },
        refreshTunnelsOn: async (host, network) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.refreshTunnels(host, network);
        },
        applyIpOn: async (pif) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.applyIp(pif);
        },
        srDriverOn: (host, sr, shape) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          return hosts.srDriver(host, sr, shape);
        },
        exportOn: (host, ask) => remoteExport(peerOf(host), ask),
        importOn: (host, ask, input) => remoteImport(peerOf(host), ask, input),
        consoleOn: async (host, uuid, protocol) => openRemoteConsole(peerOf(host), uuid, protocol),
        consoleLogOn: async (host, uuid, tail) => remoteConsoleLog(peerOf(host), uuid, tail),
        countersOn: async (host, uuids) => (hosts ? hosts.counters(host, uuids) : uuids.map(() => null)),
        hostDataSourcesOn: (host) => memberLink(host).call('metrics.hostSources', {}, 30_000),
        queryHostDataSourceOn: (host, name) => memberLink(host).call('metrics.hostQuery', { name }, 30_000),
        changeHostDataSourceOn: async (host, op, name) => void (await memberLink(host).call('metrics.hostChange', { op, name }, 30_000)),
        sendRrd: async (host, uuid, rrd) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.link(host).remote.call('metrics.adopt', { uuid, rrd }, 30_000);
        },
        migrationPrepared: (vm, destination) => {
          for (const l of prepared) l(vm, destination);
        },
        onMigrationPrepared: (listener) => {
          prepared.add(listener);
          return () => prepared.delete(listener);
        },
        ensureNetworkOn: async (host, network, replace) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.ensureNetwork(host, network, replace);
        },
        recordAddressesOn: async (host) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.recordAddresses(host);
        },
        bringDownOn: async (host, network) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.bringDown(host, network);
        },
        bondOn: async (bond, make) => {
          if (!hosts) throw new XenApiError('HOST_IS_SLAVE', m.role.role === 'member' ? m.role.master : '');
          await hosts.bond(bond, make);
        },
      };
    },
  };
}

