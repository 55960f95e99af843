/**
 * The numbers that keep one client from starving the others: connection caps,
 * header and idle deadlines, and the bounds on RPC bodies. Options of
 * `xenon server`; the defaults suit a host with a handful of API clients.
 */
import { readFileSync } from 'node:fs';

export interface HttpLimits {
  /** Open connections at once, all clients together. */
  readonly maxConnections: number;
  /** Open connections at once from one client address. */
  readonly maxConnectionsPerClient: number;
  /** A connection must deliver a complete request header within this (also the TLS handshake). */
  readonly headersTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  readonly keepAliveTimeoutMs: number;
  /** The largest XML-RPC or JSON-RPC body (disks and blobs travel over their own HTTP paths). */
  readonly maxRpcBodyBytes: number;
  /** RPC body bytes held by all requests together; more is refused with TOO_BUSY. */
  readonly maxRpcBytesInFlight: number;
  /** An RPC body must arrive completely within this. */
  readonly rpcBodyTimeoutMs: number;
}

const MiB = 1024 * 1024;

/** The soft limit on open files, read from /proc (Node has no getrlimit); undefined where unknown. */
export function openFilesSoftLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m && m[1] !== 'unlimited' ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The defaults. The connection cap stays well below the open-files limit: disks,
 * QEMU sockets, the database and the switch need descriptors too.
 */
export function defaultLimits(softLimit = openFilesSoftLimit()): HttpLimits {
  const maxConnections = Math.max(64, Math.min(4096, Math.floor((softLimit ?? 1024) / 2)));
  return {
    maxConnections,
    maxConnectionsPerClient: Math.min(256, maxConnections),
    headersTimeoutMs: 20_000,
    keepAliveTimeoutMs: 65_000,
    // xapi itself refuses RPC bodies over 300 KiB, so every real call fits with room to spare
    maxRpcBodyBytes: 2 * MiB,
    // a body costs about four times its size while it is decoded and served: this keeps a flood to ~150 MB
    maxRpcBytesInFlight: 32 * MiB,
    rpcBodyTimeoutMs: 60_000,
  };
}

export function resolveLimits(given: Partial<HttpLimits> = {}): HttpLimits {
  const limits = { ...defaultLimits(), ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) };
  for (const [name, v] of Object.entries(limits)) {
    if (!Number.isInteger(v) || v <= 0) throw new Error(`limit ${name} must be a positive integer, not ${String(v)}`);
  }
  if (limits.maxConnectionsPerClient > limits.maxConnections) throw new Error('maxConnectionsPerClient exceeds maxConnections');
  if (limits.maxRpcBodyBytes > limits.maxRpcBytesInFlight) throw new Error('maxRpcBodyBytes exceeds maxRpcBytesInFlight');
  return limits;
}
