/**
 * Sessions: login, validation, the roles each session holds, and idle expiry.
 * Session records live in the database (so they survive a restart); how
 * recently each was used is kept in memory only, to keep reads off the disk.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import type { Role } from '../datamodel/dsl.ts';
import { ROLE_LADDER } from '../datamodel/dsl.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';
import { Accounts, ROOT } from './accounts.ts';

export interface SessionInfo {
  readonly ref: string;
  readonly roles: ReadonlySet<Role>;
  readonly isLocalSuperuser: boolean;
  readonly userName: string;
  readonly subject: string;
}

export const LOCAL_PREFIX = 'local:';
const ALL_ROLES: Role[] = [...ROLE_LADDER, 'client-cert'];

export class Sessions {
  private readonly lastUsed = new Map<string, number>();
  private readonly cache = new Map<string, SessionInfo>();

  constructor(
    private readonly store: Store,
    readonly accounts: Accounts,
    private readonly host: () => string,
    private readonly idleTimeoutMs: number,
  ) {}

  /** Checks a user name and password; returns the new session's ref. */
  async login(user: string, password: string, originator: string): Promise<string> {
    const subject = user === ROOT ? NULL_REF : this.localSubject(user);
    const ok = subject !== undefined && (await this.accounts.check(user, password));
    if (!ok) throw new XenApiError('SESSION_AUTHENTICATION_FAILED', user, 'Authentication failure');
    const superuser = user === ROOT;
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
    return ref;
  }

  /** The subject of a local account, if `user` names one. */
  private localSubject(user: string): string | undefined {
    const hit = this.store.where('subject', (s) => s.subject_identifier === `${LOCAL_PREFIX}${user}`);
    return hit[0]?.[0];
  }

  /** The session behind a ref, or SESSION_INVALID. Marks it as used. */
  check(ref: unknown): SessionInfo {
    if (typeof ref !== 'string') throw new XenApiError('SESSION_INVALID', String(ref));
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
