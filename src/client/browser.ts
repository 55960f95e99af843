/**
 * The typed client for browsers (the web console): the same generated
 * methods as client.ts, over `fetch` to the page's own origin. No node imports.
 */
import { decodeReply, encodeCall, TypedClient } from './rpc.ts';

export type { Ref } from './generated.ts';
export type * as types from './generated.ts';
export { XenApiClientError } from './rpc.ts';

/** A failure to reach the server at all (network down, daemon gone), as opposed to a XenAPI error. */
export class ConnectionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConnectionError';
  }
}

export class BrowserXenApiClient extends TypedClient {
  /** `base`: the server's origin ('' for the page's own). */
  constructor(private readonly base = '') {
    super('xenon-web');
  }

  /** Resumes a session kept from an earlier page load. */
  resume(session: string): void {
    this.sessionRef = session;
  }

  async logout(): Promise<void> {
    const s = this.sessionRef;
    this.sessionRef = null;
    if (s) await this.call('session.logout', [s]).catch(() => undefined);
  }

  async call(method: string, params: readonly unknown[], signal?: AbortSignal): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(`${this.base}/jsonrpc`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: encodeCall(method, params, this.nextId++),
        signal,
        credentials: 'omit',
      });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new ConnectionError(`cannot reach the server: ${(e as Error).message}`);
    }
    const text = await res.text().catch((e: Error) => {
      throw new ConnectionError(`the connection broke: ${e.message}`);
    });
    return decodeReply(text, this.base || 'the server', res.status);
  }
}
