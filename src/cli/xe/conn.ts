/**
 * How xe reaches the server: connection settings (command line > XE_EXTRA_ARGS
 * > ~/.xe, as xe reads them), the HTTP(S) transport with certificate checking
 * or trust-on-first-use pinning (or a unix socket), and the typed client over it.
 */
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { XenApiClient } from '../../client/client.ts';

export interface ConnSettings {
  server: string;
  port?: number;
  username: string;
  password: string;
  passwordfile?: string;
  nossl: boolean;
  tofu: boolean;
  debug: boolean;
}

/** A failure on the client side, printed as `Error: …`. */
export class CliError extends Error {
  constructor(message: string, readonly usage = false) {
    super(message);
  }
}

/** A XenAPI failure: code and parameters (the typed client's error). */
export { XenApiClientError as ServerError } from '../../client/client.ts';

export function homeDir(): string {
  return process.env.HOME || homedir();
}

const truthy = (v: string): boolean => /^(true|yes|1|on)$/i.test(v.trim());

/** Splits XE_EXTRA_ARGS on commas not escaped by a backslash. */
export function splitExtraArgs(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length) {
      cur += text[++i];
    } else if (c === ',') {
      if (cur) out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (cur) out.push(cur);
  return out;
}

/** ~/.xe: `key=value` lines; blank lines and `#` comments ignored. */
export function readRc(): [string, string][] {
  const file = join(homeDir(), '.xe');
  if (!existsSync(file)) return [];
  const out: [string, string][] = [];
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq > 0) out.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return out;
}

const SHORT: Record<string, string> = { '-s': 'server', '-h': 'server', '-p': 'port', '-u': 'username', '-pw': 'password', '-pwf': 'passwordfile' };
const FLAGS: Record<string, string> = { '--nossl': 'nossl', '--trust-on-first-use': 'tofu', '--debug': 'debug' };

/**
 * Takes the connection settings out of the arguments, as xe does: `-s x`,
 * `--nossl`, and `server=x`-style keywords; returns the rest.
 */
export function parseConnection(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): { settings: ConnSettings; rest: string[] } {
  const s: ConnSettings = { server: '127.0.0.1', username: 'root', password: '', nossl: false, tofu: false, debug: false };
  const set = (k: string, v: string): boolean => {
    switch (k) {
      case 'server': s.server = v; return true;
      case 'port': {
        const p = Number(v);
        if (!Number.isInteger(p) || p < 0 || p > 65535) throw new CliError('Port number must be an integer (0-65535)', true);
        s.port = p;
        return true;
      }
      case 'username': s.username = v; return true;
      case 'password': s.password = v; return true;
      case 'passwordfile': s.passwordfile = v; return true;
      case 'nossl': s.nossl = truthy(v); return true;
      case 'tofu': case 'trust-on-first-use': s.tofu = truthy(v); return true;
      case 'debug': s.debug = truthy(v); return true;
      default: return false;
    }
  };
  const process1 = (args: readonly string[]): string[] => {
    const rest: string[] = [];
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      if (SHORT[a] && i + 1 < args.length) {
        set(SHORT[a], args[++i]);
        continue;
      }
      if (FLAGS[a]) {
        set(FLAGS[a], 'true');
        continue;
      }
      const eq = a.indexOf('=');
      if (eq > 0 && !a.startsWith('-') && set(a.slice(0, eq), a.slice(eq + 1))) continue;
      rest.push(a);
    }
    return rest;
  };
  // lowest priority first: ~/.xe, then XE_EXTRA_ARGS, then the command line
  for (const [k, v] of readRc()) set(k, v); // keys xe does not know are ignored
  const extraRest = process1(splitExtraArgs(env.XE_EXTRA_ARGS ?? ''));
  const rest = process1(argv);
  if (s.passwordfile) {
    let lines: string[];
    try {
      lines = readFileSync(s.passwordfile, 'utf8').split('\n');
    } catch {
      throw new CliError(`Error opening password file '${s.passwordfile}'`);
    }
    if (lines.length < 2) throw new CliError('password file format: expecting username on the first line, password on the second line');
    s.username = lines[0].replace(/\r$/, '');
    s.password = lines[1].replace(/\r$/, '');
  }
  return { settings: s, rest: [...rest, ...extraRest] };
}

export function knownHostsFile(): string {
  return join(homeDir(), '.xe-known-hosts');
}

function pinnedFingerprint(hostPort: string): string | undefined {
  const file = knownHostsFile();
  if (!existsSync(file)) return undefined;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [h, fp] = line.trim().split(/\s+/);
    if (h === hostPort && fp) return fp;
  }
  return undefined;
}

/** The HTTP(S) connection to one server, shared by RPC, uploads, downloads and the console. */
export class Transport {
  readonly secure: boolean;
  readonly host: string;
  readonly port: number;
  readonly agent: http.Agent;
  /** `-s /path/to/socket`: plain HTTP over a unix socket (the daemon's local socket). */
  readonly socketPath: string | undefined;

  constructor(readonly settings: ConnSettings) {
    this.socketPath = settings.server.startsWith('/') ? settings.server : undefined;
    this.secure = !settings.nossl && !this.socketPath;
    this.host = settings.server.replace(/^\[|\]$/g, '');
    this.port = settings.port ?? (this.secure ? 443 : 80);
    if (!this.secure) {
      this.agent = new http.Agent({ keepAlive: true });
      return;
    }
    const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: !settings.tofu });
    if (settings.tofu) {
      const hostPort = `${this.host}:${this.port}`;
      // Pin the certificate before any byte of a request goes out.
      (agent as unknown as { createConnection: unknown }).createConnection = (opts: tls.ConnectionOptions, cb: (err: Error | null, s?: Duplex) => void) => {
        const sock = tls.connect({ ...opts, rejectUnauthorized: false, servername: net_isIp(this.host) ? undefined : this.host });
        let done = false;
        sock.once('secureConnect', () => {
          done = true;
          const fp = sock.getPeerCertificate().fingerprint256;
          const pinned = pinnedFingerprint(hostPort);
          if (!fp) {
            sock.destroy();
            cb(new CliError(`the server at ${hostPort} presented no certificate`));
          } else if (pinned === undefined) {
            appendFileSync(knownHostsFile(), `${hostPort} ${fp}\n`, { mode: 0o600 });
            process.stderr.write(`Trusting the certificate of ${hostPort} on first use (SHA-256 ${fp}); pinned in ${knownHostsFile()}\n`);
            cb(null, sock);
          } else if (pinned !== fp) {
            sock.destroy();
            cb(new CliError(`the certificate of ${hostPort} has changed (pinned SHA-256 ${pinned}, now ${fp}). Refusing to connect: if the change is expected, remove its line from ${knownHostsFile()}`));
          } else cb(null, sock);
        });
        sock.once('error', (e) => {
          if (!done) cb(e);
        });
        return undefined;
      };
    }
    this.agent = agent;
  }

  get origin(): string {
    if (this.socketPath) return 'http://localhost';
    const h = this.host.includes(':') ? `[${this.host}]` : this.host;
    return `${this.secure ? 'https' : 'http'}://${h}:${this.port}`;
  }

  request(method: string, path: string, headers: http.OutgoingHttpHeaders = {}): http.ClientRequest {
    const mod = this.secure ? https : http;
    return mod.request({ ...(this.socketPath ? { socketPath: this.socketPath } : { host: this.host, port: this.port }), method, path, headers, agent: this.agent, servername: this.secure && !net_isIp(this.host) ? this.host : undefined } as https.RequestOptions);
  }

  close(): void {
    this.agent.destroy();
  }
}

function net_isIp(h: string): boolean {
  return /^[\d.]+$/.test(h) || h.includes(':');
}

/** The typed client over the transport: one connection pool, certificate pinning included. */
export function connect(transport: Transport): XenApiClient {
  return new XenApiClient(transport.origin, {
    agent: transport.agent,
    socketPath: transport.socketPath,
    userAgent: 'xe-cli/xenon',
    onCall: transport.settings.debug ? (method) => void process.stderr.write(`xe: → ${method}\n`) : undefined,
  });
}

/** A call by class and message name with the session first, for what works on any class (the generic families). */
export function callByName(client: XenApiClient, cls: string, msg: string, ...args: unknown[]): Promise<unknown> {
  return client.call(`${cls}.${msg}`, [client.session, ...args]);
}
