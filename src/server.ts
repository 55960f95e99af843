/**
 * Wires Xenon together: database, accounts, sessions, tasks, the first-start
 * pool, message handlers, the HTTP(S) listeners and the housekeeping timers.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { Dispatcher } from './api/dispatch.ts';
import { ApiFront, type HttpRoutes } from './api/http.ts';
import type { HttpLimits } from './api/limits.ts';
import { ensureCertificate, serverTlsOptions } from './api/tls.ts';
import { Accounts, ROOT } from './auth/accounts.ts';
import { AuditLog } from './auth/audit.ts';
import { listenLocalRoot, localRootSocketOf } from './auth/local-root.ts';
import { makePrivate, privateDataDir } from './auth/private-files.ts';
import { Sessions } from './auth/sessions.ts';
import { Store } from './db/store.ts';
import { readHostFacts } from './host/facts.ts';
import type { Services } from './messages/context.ts';
import { HANDLERS } from './messages/index.ts';
import { firstStart } from './pool/first-start.ts';
import { openMembership } from './pool/membership.ts';
import { Tasks } from './tasks/manager.ts';
import { registerWebConsole } from './web/static.ts';

export interface Listen {
  host: string;
  port: number;
  /** A unix socket instead of host:port (reachable across network namespaces). */
  socketPath?: string;
}

export interface ServerConfig {
  dataDir: string;
  http?: Listen | null;
  https?: Listen | null;
  backend?: 'qemu' | 'sim';
  rootPassword?: string;
  logLevel?: string;
  /** Sessions idle for longer are destroyed. */
  sessionIdleMs?: number;
  /** Finished tasks older than this are destroyed. */
  taskMaxAgeMs?: number;
  synchronous?: 'FULL' | 'NORMAL' | 'OFF';
  /** Where a newly generated root password is told (default: stdout). */
  announce?: (line: string) => void;
  logger?: Logger;
  /** Connection, header and RPC body limits (defaults in api/limits.ts). */
  httpLimits?: Partial<HttpLimits>;
  /** More local root sockets besides `<data-dir>/xapi` (e.g. xapi's /var/lib/xcp/xapi). */
  localSockets?: readonly string[];
  /** The built web console served on GET / (default web/dist of this tree; null: none). */
  webDir?: string | null;
}

export interface RunningServer {
  readonly services: Services;
  readonly dispatcher: Dispatcher;
  readonly httpUrl?: string;
  readonly httpsUrl?: string;
  /** Resolves when the daemon asks to be restarted (it joined or left a pool): close it and start it again. */
  readonly restartRequested: Promise<void>;
  /** Whether GET / serves the web console (it was built). */
  readonly webConsole: boolean;
  close(): Promise<void>;
}

/** Subsystems attach their service (`services.xenops`, …) and HTTP routes through this. */
export interface Plugin {
  name: string;
  start?(services: Services, routes: HttpRoutes): Promise<void> | void;
  stop?(): Promise<void> | void;
}

async function ensureRoot(accounts: Accounts, cfg: ServerConfig, log: Logger): Promise<void> {
  if (accounts.has(ROOT)) return;
  const given = cfg.rootPassword ?? process.env.XENON_ROOT_PASSWORD;
  const password = given && given.length > 0 ? given : randomBytes(12).toString('base64url');
  await accounts.setPassword(ROOT, password);
  if (!given) (cfg.announce ?? ((l) => process.stdout.write(`${l}\n`)))(`xenon: generated root password (shown once): ${password}`);
  log.info('root account created');
}

function listen(server: http.Server | https.Server, at: Listen): Promise<AddressInfo | string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo | string);
    };
    if (at.socketPath) {
      rmSync(at.socketPath, { force: true });
      server.listen(at.socketPath, done);
    } else server.listen(at.port, at.host, done);
  });
}

const urlOf = (scheme: string, a: AddressInfo | string): string =>
  typeof a === 'string' ? `${scheme}+unix://${encodeURIComponent(a)}` : `${scheme}://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;

export async function startServer(cfg: ServerConfig, plugins: Plugin[] = []): Promise<RunningServer> {
  const log = cfg.logger ?? pino({ level: cfg.logLevel ?? 'info' });
  const { tightened } = privateDataDir(cfg.dataDir);
  if (tightened) log.warn({ dataDir: cfg.dataDir, tightened }, 'removed group and other access from files of the data directory');
  const dbPath = join(cfg.dataDir, 'xenon.db');
  const store = new Store({ path: dbPath, synchronous: cfg.synchronous });
  makePrivate(dbPath, `${dbPath}-wal`, `${dbPath}-shm`);
  const audit = new AuditLog(join(cfg.dataDir, 'audit.log'), store, log);
  const accounts = new Accounts(store.sqlite);
  await ensureRoot(accounts, cfg, log);
  const address = cfg.https?.host && cfg.https.host !== '0.0.0.0' ? cfg.https.host : '127.0.0.1';
  // a pool member's database is the master's, replicated: it writes nothing of its own
  const membership = await openMembership(cfg.dataDir, store, log);
  const identity = membership.identity ?? firstStart(store, readHostFacts(), address, membership.self);
  const sessions = new Sessions(store, accounts, () => identity.host, cfg.sessionIdleMs ?? 24 * 3600_000, log);
  const tasks = new Tasks(store, () => identity.host);
  if (!membership.member) tasks.failOrphans();
  let dispatcher: Dispatcher | undefined;
  let restart = (): void => undefined;
  const restartRequested = new Promise<void>((resolve) => (restart = resolve));
  const services: Services = {
    store, sessions, tasks, log, audit, dataDir: cfg.dataDir,
    hostRef: () => identity.host,
    poolRef: () => identity.pool,
    implemented: (message) => dispatcher?.implementedByName(message) ?? false,
    // a getter: a master that hands over to a new master answers as a member from then on
    get member() {
      return membership.member;
    },
    restart: () => void setTimeout(restart, 200).unref(),
  };
  const routes: HttpRoutes = { routes: new Map(), connect: new Map(), upgrade: new Map() };
  dispatcher = new Dispatcher(services, HANDLERS);
  for (const p of plugins) await p.start?.(services, routes);
  const webConsole = cfg.webDir === null ? false : registerWebConsole(routes, cfg.webDir);

  const front = new ApiFront({ dispatcher, routes, log, limits: cfg.httpLimits });
  const servers: (http.Server | https.Server)[] = [];
  let httpUrl: string | undefined;
  let httpsUrl: string | undefined;
  if (cfg.http !== null) {
    const s = front.createServer();
    httpUrl = urlOf('http', await listen(s, cfg.http ?? { host: '127.0.0.1', port: 0 }));
    servers.push(s);
  }
  if (cfg.https) {
    const tls = await ensureCertificate(cfg.dataDir, readHostFacts().hostname, [cfg.https.host]);
    const s = front.createServer(serverTlsOptions(tls));
    httpsUrl = urlOf('https', await listen(s, cfg.https));
    servers.push(s);
  }
  const localFront = new ApiFront({ dispatcher, routes, log, limits: cfg.httpLimits, localRoot: true });
  for (const path of [localRootSocketOf(cfg.dataDir), ...(cfg.localSockets ?? [])]) {
    const s = localFront.createServer();
    try {
      await listenLocalRoot(s, path);
      servers.push(s);
    } catch (err) {
      // the data directory's own socket is best effort (its path may be too long); one asked for is not
      if (path !== localRootSocketOf(cfg.dataDir)) throw err;
      log.warn({ err, path }, 'no local root socket in the data directory');
    }
  }
  const housekeeping = setInterval(() => {
    if (store.isReplica) return; // the master keeps sessions and tasks
    try {
      sessions.expireIdle();
      tasks.collect(cfg.taskMaxAgeMs ?? 3600_000);
    } catch (err) {
      log.error({ err }, 'housekeeping failed');
    }
  }, 60_000);
  housekeeping.unref();
  log.info({ httpUrl, httpsUrl, dataDir: cfg.dataDir }, 'xenon started');

  return {
    services, dispatcher, httpUrl, httpsUrl, restartRequested, webConsole,
    async close() {
      clearInterval(housekeeping);
      await membership.close();
      for (const p of [...plugins].reverse()) await p.stop?.();
      await Promise.all(servers.map((s) => new Promise<void>((r) => { s.close(() => r()); s.closeAllConnections(); })));
      store.close();
      audit.close();
    },
  };
}
