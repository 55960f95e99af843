/**
 * Sessions: login, validation, the roles each session holds, and idle expiry.
 * Session records live in the database (so they survive a restart); how
 * recently each was used is kept in memory only, to keep reads off the disk.
 */
import { randomUUID } from 'node:crypto';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Role } from '../datamodel/dsl.ts';
import { ROLE_LADDER } from '../datamodel/dsl.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';
import type { Logger } from 'pino';
import { Accounts, ROOT } from './accounts.ts';
import { LoginThrottle } from './throttle.ts';

export interface SessionInfo {
  readonly ref: string;
  readonly roles: ReadonlySet<Role>;
  readonly isLocalSuperuser: boolean;
  readonly userName: string;
  readonly subject: string;
}

export const LOCAL_PREFIX = 'local:';

/** Where a login comes from. */
export interface LoginOrigin {
  readonly address: string;
  /** The local root socket: any credentials make a local superuser session, as xapi's unix socket does. */
  readonly localRoot: boolean;
}

/**
 * xapi's session limits (Xapi_globs): a client that never logs out cannot grow
 * the database without bound. Sessions are grouped by user name, or, for
 * root, by originator (root with no originator: one shared group); past the
 * limit the least recently used of the group are destroyed.
 */
export const SESSION_LIMITS = { perUserName: 500, perOriginator: 500, anonymous: 400 } as const;

function groupOf(rec: Readonly<Record<string, unknown>>): { key: string; limit: number } {
  const name = String(rec.auth_user_name);
  const originator = String(rec.originator);
  if (name !== '' && name !== ROOT) return { key: `username:${name}`, limit: SESSION_LIMITS.perUserName };
  if (originator !== '') return { key: `originator:${originator}`, limit: SESSION_LIMITS.perOriginator };
  return { key: 'anonymous', limit: SESSION_LIMITS.anonymous };
}
const ALL_ROLES: Role[] = [...ROLE_LADDER, 'client-cert'];

export class Sessions {
  private readonly lastUsed = new Map<string, number>();
  private readonly cache = new Map<string, SessionInfo>();
  /** Sessions good on this host alone (slave_local_login): kept in memory, never in the replicated database. */
  private readonly local = new Map<string, SessionInfo>();
  private readonly throttle: LoginThrottle;

  constructor(
    private readonly store: Store,
    readonly accounts: Accounts,
    private readonly host: () => string,
    private readonly idleTimeoutMs: number,
    private readonly log: Logger,
  ) {
    this.throttle = new LoginThrottle(log);
  }

  /**
   * Checks a user name and password (throttled: see throttle.ts); returns the
   * new session's ref. On the local root socket no check is made: the
   * session is the local superuser's, named as the caller asked.
   */
  async login(user: string, password: string, originator: string, origin: LoginOrigin): Promise<string> {
    if (origin.localRoot) return this.open(user, NULL_REF, true, originator);
    const subject = user === ROOT ? NULL_REF : this.localSubject(user);
    const known = subject !== undefined && this.accounts.has(user);
    const ok = await this.throttle.attempt(user, origin.address, known, async () => (await this.accounts.check(user, password)) && known);
    if (!ok || subject === undefined) throw new XenApiError('SESSION_AUTHENTICATION_FAILED', user, 'Authentication failure');
    return this.open(user, subject, user === ROOT, originator);
  }

  /**
   * session.slave_local_login_with_password: root's password on this host
   * (its own accounts, also on a pool member whose master is gone) gives a
   * session that exists only in this daemon's memory, as xapi's local sessions.
   */
  async loginLocal(user: string, password: string, origin: LoginOrigin): Promise<string> {
    const known = user === ROOT && this.accounts.has(user);
    const ok = origin.localRoot || (await this.throttle.attempt(user, origin.address, known, async () => (await this.accounts.check(user, password)) && known));
    if (!ok) throw new XenApiError('SESSION_AUTHENTICATION_FAILED', user, 'Authentication failure');
    const ref = `OpaqueRef:${randomUUID()}`;
    this.local.set(ref, { ref, roles: new Set(ALL_ROLES), isLocalSuperuser: true, userName: user, subject: NULL_REF });
    return ref;
  }

  /** session.local_logout. */
  localLogout(ref: string): void {
    this.local.delete(ref);
  }

  private open(user: string, subject: string, superuser: boolean, originator: string): string {
    const now = formatDateTime(new Date());
    const ref = this.store.transact((tx) =>
      tx.create('session', {
        this_host: this.host(),
        last_active: now,
        validation_time: now,
        is_local_superuser: superuser,
        subject,
        auth_user_name: user,
        auth_user_sid: superuser ? '' : `${LOCAL_PREFIX}${user}`,
        originator,
        rbac_permissions: [],
      }),
    );
    this.lastUsed.set(ref, Date.now());
    this.trimGroup(ref);
    return ref;
  }

  /** Keeps the new session's group within its limit, destroying the least recently used. */
  private trimGroup(fresh: string): void {
    const { key, limit } = groupOf(this.store.must('session', fresh));
    const group = this.store.where('session', (s) => groupOf(s).key === key).map(([ref]) => ref);
    if (group.length <= limit) return;
    const seen = (ref: string): number => this.lastUsed.get(ref) ?? 0;
    const doomed = group.filter((r) => r !== fresh).sort((a, b) => seen(a) - seen(b)).slice(0, group.length - limit);
    this.store.transact((tx) => doomed.forEach((ref) => tx.delete('session', ref)));
    doomed.forEach((ref) => this.forgetCached(ref));
    this.log.info({ group: key, destroyed: doomed.length, limit }, 'session limit reached: destroyed the least recently used sessions');
  }

  /** The subject of a local account, if `user` names one. */
  private localSubject(user: string): string | undefined {
    const hit = this.store.where('subject', (s) => s.subject_identifier === `${LOCAL_PREFIX}${user}`);
    return hit[0]?.[0];
  }

  /** The session behind a ref, or SESSION_INVALID. Marks it as used. */
  check(ref: unknown): SessionInfo {
    if (typeof ref !== 'string') throw new XenApiError('SESSION_INVALID', String(ref));
    const local = this.local.get(ref);
    if (local) return local;
    let info = this.cache.get(ref);
    if (!info) {
      const rec = this.store.get('session', ref);
      if (!rec) throw new XenApiError('SESSION_INVALID', ref);
      info = this.describe(ref, rec);
      this.cache.set(ref, info);
      if (!this.lastUsed.has(ref)) this.lastUsed.set(ref, Date.parse(isoOf(String(rec.last_active))) || Date.now());
    }
    if (!this.store.get('session', ref)) {
      this.forgetCached(ref);
      throw new XenApiError('SESSION_INVALID', ref);
    }
    this.lastUsed.set(ref, Date.now());
    return info;
  }

  private describe(ref: string, rec: Readonly<Record<string, unknown>>): SessionInfo {
    const superuser = rec.is_local_superuser === true;
    const subject = String(rec.subject);
    return {
      ref,
      roles: new Set(superuser ? ALL_ROLES : this.subjectRoles(subject)),
      isLocalSuperuser: superuser,
      userName: String(rec.auth_user_name),
      subject,
    };
  }

  /** Role names of a subject (its role refs resolved). */
  subjectRoles(subject: string): Role[] {
    const rec = this.store.get('subject', subject);
    if (!rec) return [];
    return (rec.roles as string[]).map((r) => String(this.store.get('role', r)?.name_label ?? '')).filter(Boolean) as Role[];
  }

  /** Drops cached role sets, e.g. after a subject's roles change. */
  invalidate(): void {
    this.cache.clear();
  }

  private forgetCached(ref: string): void {
    this.cache.delete(ref);
    this.lastUsed.delete(ref);
  }

  logout(ref: string): void {
    this.local.delete(ref);
    this.forgetCached(ref);
    if (this.store.get('session', ref)) this.store.transact((tx) => tx.delete('session', ref));
  }

  /** Destroys sessions idle for longer than the timeout; returns how many. */
  expireIdle(now = Date.now()): number {
    const stale = this.store.refs('session').filter((ref) => {
      const seen = this.lastUsed.get(ref) ?? (Date.parse(isoOf(String(this.store.get('session', ref)?.last_active))) || 0);
      return now - seen > this.idleTimeoutMs;
    });
    if (stale.length === 0) return 0;
    this.store.transact((tx) => stale.forEach((ref) => tx.delete('session', ref)));
    stale.forEach((ref) => this.forgetCached(ref));
    return stale.length;
  }

  /** Lets a local account change its own password. */
  async changePassword(session: SessionInfo, oldPw: string, newPw: string): Promise<void> {
    if (!(await this.accounts.check(session.userName, oldPw))) {
      throw new XenApiError('CHANGE_PASSWORD_REJECTED', 'Authentication failure');
    }
    if (newPw.length === 0) throw new XenApiError('CHANGE_PASSWORD_REJECTED', 'The new password is empty');
    await this.accounts.setPassword(session.userName, newPw);
  }
}

/** `20240131T12:34:56Z` → `2024-01-31T12:34:56Z`. */
export function isoOf(xapi: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})T(.*)$/.exec(xapi);
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}` : xapi;
}
