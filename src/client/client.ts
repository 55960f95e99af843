/**
 * Xenon's typed XenAPI client (JSON-RPC), used by xe, the web UI's server
 * side and the tests. Method types come from the generated declarations;
 * calls go through one small proxy, so the datamodel stays the only list.
 */
import http from 'node:http';
import https from 'node:https';
import { decodeReply, encodeCall, TypedClient, XenApiClientError } from './rpc.ts';

export type { Ref } from './generated.ts';
export * as types from './generated.ts';
export { XenApiClientError } from './rpc.ts';

export interface ClientOptions {
  /** Verify the server's certificate (default true); or pin one PEM. */
  rejectUnauthorized?: boolean;
  ca?: string;
  timeoutMs?: number;
  /** Reach the server through a unix socket (the URL then only names the scheme). */
  socketPath?: string;
  /** The connection pool to use instead of the client's own (e.g. one that pins certificates). */
  agent?: http.Agent;
  /** Sent as User-Agent. */
  userAgent?: string;
  /** Told the method name of each call as it goes out (tracing). */
  onCall?: (method: string) => void;
}

export class XenApiClient extends TypedClient {
  readonly url: URL;
  private readonly agent: http.Agent;

  constructor(url: string, private readonly opts: ClientOptions = {}) {
    super('xenon-client');
    this.url = new URL(url);
    this.agent = opts.agent ?? (this.url.protocol === 'https:'
      ? new https.Agent({ keepAlive: true, rejectUnauthorized: opts.rejectUnauthorized ?? true, ca: opts.ca })
      : new http.Agent({ keepAlive: true }));
  }

  async logout(): Promise<void> {
    if (!this.sessionRef) return;
    try {
      await this.call(this.localSession ? 'session.local_logout' : 'session.logout', [this.sessionRef]);
    } finally {
      this.sessionRef = null;
    }
  }

  call(method: string, params: readonly unknown[]): Promise<unknown> {
    const body = encodeCall(method, params, this.nextId++);
    const mod = this.url.protocol === 'https:' ? https : http;
    const headers: http.OutgoingHttpHeaders = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) };
    if (this.opts.userAgent) headers['User-Agent'] = this.opts.userAgent;
    this.opts.onCall?.(method);
    return new Promise((resolve, reject) => {
      const req = mod.request(
        this.url.origin + '/jsonrpc',
        { method: 'POST', agent: this.agent, socketPath: this.opts.socketPath, headers, timeout: this.opts.timeoutMs },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            try {
              resolve(decodeReply(Buffer.concat(chunks).toString('utf8'), this.url.origin, res.statusCode ?? 0));
            } catch (e) {
              reject(e);
            }
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method}: timed out`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** Waits for a task to finish; returns its result (XML-RPC text) or throws its error. */
  async waitTask(task: string, pollMs = 100): Promise<string> {
    for (;;) {
      const rec = await this.api.task.get_record(task);
      if (rec.status === 'success') return rec.result;
      if (rec.status === 'failure' || rec.status === 'cancelled') throw new XenApiClientError(rec.error_info[0] ?? 'INTERNAL_ERROR', rec.error_info.slice(1));
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  /** Where to connect for other HTTP requests (console, import, export). */
  get connectTarget(): { socketPath: string } | { host: string; port: number } {
    return this.opts.socketPath ? { socketPath: this.opts.socketPath } : { host: this.url.hostname, port: Number(this.url.port || (this.url.protocol === 'https:' ? 443 : 80)) };
  }

  close(): void {
    this.agent.destroy();
  }
}
