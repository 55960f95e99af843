/**
 * The transport-free half of the typed client: JSON-RPC envelopes, errors and
 * the proxy that turns `api.VM.start(vm, false, false)` into a call. No node
 * imports, so the browser client (browser.ts) shares it with the node one.
 */
import type { Ref, XenApiAsyncClasses, XenApiClasses } from './generated.ts';

export class XenApiClientError extends Error {
  constructor(
    readonly code: string,
    readonly params: readonly string[],
  ) {
    super(params.length ? `${code}: ${params.join(', ')}` : code);
    this.name = 'XenApiClientError';
  }
}

/** A raw call: method name and every parameter, session included. */
export type RawCall = (method: string, params: readonly unknown[]) => Promise<unknown>;

/** The JSON-RPC request body for one call. */
export const encodeCall = (method: string, params: readonly unknown[], id: number): string =>
  JSON.stringify({ jsonrpc: '2.0', method, params, id });

interface JsonRpcReply {
  result?: unknown;
  error?: { message: string; data?: unknown[] };
}

/** The result of a JSON-RPC reply, or its XenAPI error thrown; a reply that is not JSON-RPC throws a plain Error. */
export function decodeReply(text: string, origin: string, status: number): unknown {
  let reply: JsonRpcReply;
  try {
    reply = JSON.parse(text) as JsonRpcReply;
  } catch (e) {
    throw new Error(`bad reply from ${origin} (HTTP ${status}): ${(e as Error).message}`);
  }
  if (reply.error) throw new XenApiClientError(reply.error.message, (reply.error.data ?? []).map((d) => (typeof d === 'string' ? d : JSON.stringify(d))));
  return reply.result;
}

/** `api.<Class>.<message>(…)` for every class, the session put first; `prefix` 'Async.' gives the task forms. */
export function classProxy(call: RawCall, session: () => string, prefix: string): XenApiClasses {
  const cache = new Map<string, object>();
  return new Proxy({} as XenApiClasses, {
    get: (_t, cls: string) => {
      let c = cache.get(cls);
      if (!c) {
        c = new Proxy({}, { get: (_u, name: string) => (...args: unknown[]) => call(`${prefix}${cls}.${name}`, [session(), ...args]) });
        cache.set(cls, c);
      }
      return c;
    },
  });
}

export const asyncProxy = (call: RawCall, session: () => string): XenApiAsyncClasses =>
  classProxy(call, session, 'Async.') as unknown as XenApiAsyncClasses;

/**
 * What both typed clients share: the session, the typed `api` and `async`
 * proxies and the login; a client only says how one raw call travels.
 */
export abstract class TypedClient {
  protected sessionRef: string | null = null;
  /** The session is a slave-local one (good on that host only; ended by session.local_logout). */
  protected localSession = false;
  protected nextId = 0;
  /** `client.api.VM.get_all()` — every message that takes a session, typed. */
  readonly api: XenApiClasses;
  /** `client.async.VM.start(…)` → a task ref. */
  readonly async: XenApiAsyncClasses;

  constructor(private readonly defaultOriginator: string) {
    const call: RawCall = (method, params) => this.call(method, params);
    this.api = classProxy(call, () => this.session, '');
    this.async = asyncProxy(call, () => this.session);
  }

  /** A raw call: method name and every parameter, session included. */
  abstract call(method: string, params: readonly unknown[]): Promise<unknown>;

  get session(): string {
    if (!this.sessionRef) throw new Error('not logged in');
    return this.sessionRef;
  }

  get loggedIn(): boolean {
    return this.sessionRef !== null;
  }

  async login(user: string, password: string, originator = this.defaultOriginator): Promise<Ref<'session'>> {
    const ref = await this.call('session.login_with_password', [user, password, '2.21', originator]);
    if (typeof ref !== 'string') throw new XenApiClientError('INTERNAL_ERROR', ['session.login_with_password returned no reference']);
    this.sessionRef = ref;
    this.localSession = false;
    return ref;
  }

  /** Logs in on a pool member itself (its master gone): session.slave_local_login_with_password. */
  async loginLocal(user: string, password: string): Promise<Ref<'session'>> {
    const ref = await this.call('session.slave_local_login_with_password', [user, password]);
    if (typeof ref !== 'string') throw new XenApiClientError('INTERNAL_ERROR', ['session.slave_local_login_with_password returned no reference']);
    this.sessionRef = ref;
    this.localSession = true;
    return ref;
  }
}
