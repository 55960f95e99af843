/**
 * This host's place in its pool, kept in `<data-dir>/pool.json` (0600): a
 * master (the pool's secret, made when first needed), or a member (where its
 * master is, the master's certificate, the secret, and its own host record).
 * xapi keeps the same in pool.conf and its pool secret file.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface MasterRole {
  readonly role: 'master';
  /** Shared with members at join; authenticates the host-to-host channel. */
  readonly secret: string;
  /** Left a pool (ejected): the next start forgets the pool's records and begins a pool of one. */
  readonly reset?: boolean;
  /** This host's record, once a member became master (a first master's is the database's first host). */
  readonly host?: string;
}

export interface MemberRole {
  readonly role: 'member';
  /** The master's address as pool.join was given it (host, or host:port). */
  readonly master: string;
  /** The master's TLS certificate (PEM), pinned for every connection to it. */
  readonly masterCert: string;
  readonly secret: string;
  /** This host's record in the pool's database. */
  readonly host: string;
}

export type PoolRole = MasterRole | MemberRole;

const fileOf = (dataDir: string): string => join(dataDir, 'pool.json');

const isString = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/** The role recorded in the data directory; a fresh directory is a master of a pool of one. */
export function readRole(dataDir: string): PoolRole {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(fileOf(dataDir), 'utf8'));
  } catch {
    return writeRole(dataDir, { role: 'master', secret: newSecret() });
  }
  const r = parsed as Record<string, unknown>;
  if (r.role === 'member' && isString(r.master) && isString(r.masterCert) && isString(r.secret) && isString(r.host)) {
    return { role: 'member', master: r.master, masterCert: r.masterCert, secret: r.secret, host: r.host };
  }
  if (r.role === 'master' && isString(r.secret)) {
    return { role: 'master', secret: r.secret, ...(r.reset === true ? { reset: true } : {}), ...(isString(r.host) ? { host: r.host } : {}) };
  }
  throw new Error(`${fileOf(dataDir)} is not a pool role this daemon understands`);
}

/** Writes the role atomically (a crash leaves the old or the new one). */
export function writeRole<R extends PoolRole>(dataDir: string, role: R): R {
  const tmp = `${fileOf(dataDir)}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(role)}\n`, { mode: 0o600 });
  renameSync(tmp, fileOf(dataDir));
  return role;
}

export const newSecret = (): string => randomBytes(32).toString('base64url');
