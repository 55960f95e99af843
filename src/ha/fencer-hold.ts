/**
 * The fencer's hand-over: while no daemon runs (a clean restart), the fencer
 * keeps the host's lease alive itself through etcd 3.4's JSON gateway
 * (`POST /v3/lease/keepalive` on each member's client URL), so it needs no
 * gRPC client. Only node's own modules: the fencer must start fast and small.
 */
import { request } from 'node:http';

export interface Hold {
  /** The lease (decimal id). */
  readonly lease: string;
  /** The members' client URLs (`http://addr:2379`). */
  readonly endpoints: readonly string[];
  readonly ttlS: number;
  /** How long the fencer keeps the lease alive without a daemon. */
  readonly graceMs: number;
}

/** The longest grace a daemon may ask for (10 min). */
export const MAX_GRACE_MS = 600_000;

/**
 * How long the fencer keeps a cleanly stopped daemon's lease alive for the next
 * daemon (s; `XENON_HA_RESTART_GRACE_S`, at most 600): past it, with no daemon
 * back, the guests are fenced and the survivors restart the protected ones.
 */
export function restartGraceMs(env: NodeJS.ProcessEnv = process.env): number {
  const s = Number(env.XENON_HA_RESTART_GRACE_S ?? 60);
  return Number.isFinite(s) && s >= 0 ? Math.min(Math.round(s * 1000), MAX_GRACE_MS) : 60_000;
}
const ENDPOINT = /^http:\/\/(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]{2,45}\]):\d{1,5}$/;
const MAX_BODY = 4096;

/** A hold message as untrusted input: undefined unless every field is what a daemon sends. */
export function checkHold(v: unknown): Hold | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const h = v as Record<string, unknown>;
  const { lease, endpoints, ttlS, graceMs } = h;
  if (typeof lease !== 'string' || !/^\d{1,20}$/.test(lease)) return undefined;
  if (!Array.isArray(endpoints) || endpoints.length === 0 || endpoints.length > 5) return undefined;
  if (!endpoints.every((e): e is string => typeof e === 'string' && ENDPOINT.test(e))) return undefined;
  if (typeof ttlS !== 'number' || !Number.isInteger(ttlS) || ttlS < 2 || ttlS > 60) return undefined;
  if (typeof graceMs !== 'number' || !Number.isInteger(graceMs) || graceMs < 0 || graceMs > MAX_GRACE_MS) return undefined;
  return { lease, endpoints, ttlS, graceMs };
}

/** One keepalive on one member: the TTL it answered (0: the lease is gone), or undefined (no answer in time). */
function keepaliveOn(endpoint: string, lease: string, timeoutMs: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const body = JSON.stringify({ ID: lease });
    const req = request(`${endpoint}/v3/lease/keepalive`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        text += d;
        if (text.length > MAX_BODY) req.destroy();
      });
      res.on('end', () => resolve(ttlOf(res.statusCode, text)));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end(body);
  });
}

/** `{"result":{…,"ID":"…","TTL":"5"}}`; the gateway leaves a TTL of 0 out. */
function ttlOf(status: number | undefined, text: string): number | undefined {
  if (status !== 200) return undefined;
  try {
    const msg: unknown = JSON.parse(text.split('\n')[0]);
    const result = typeof msg === 'object' && msg !== null && 'result' in msg ? msg.result : undefined;
    if (typeof result !== 'object' || result === null || !('ID' in result)) return undefined;
    const ttl = 'TTL' in result ? Number(result.TTL) : 0;
    return Number.isFinite(ttl) && ttl >= 0 ? ttl : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A keepalive to every member at once: the first TTL > 0 (the lease is ours and
 * renewed), else 0 if a member said the lease is gone, else undefined.
 */
export async function holdKeepalive(h: Hold, timeoutMs: number): Promise<number | undefined> {
  const answers = h.endpoints.map((e) => keepaliveOn(e, h.lease, timeoutMs));
  const first = await Promise.any(answers.map((a) => a.then((t) => (t !== undefined && t > 0 ? t : Promise.reject(new Error('no'))))))
    .catch(() => undefined);
  if (first !== undefined) return first;
  return (await Promise.all(answers)).some((t) => t === 0) ? 0 : undefined;
}
