/**
 * The audit trail, as xapi keeps one: every call that changes state and every
 * refused call, one JSON line each in `<data-dir>/audit.log` (0600) with time,
 * subject, originator, client address, message and outcome — never a
 * parameter (passwords, secrets) nor a session reference. The file is reopened
 * on SIGHUP, so logrotate can move it away.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { Logger } from 'pino';
import { MESSAGES } from '../datamodel/model.ts';
import type { Store } from '../db/store.ts';
import { PRIVATE_FILE } from './private-files.ts';

export interface AuditOrigin {
  readonly address: string;
  readonly localRoot: boolean;
}

/** What the trail needs of a call's outcome. */
export type AuditOutcome = { readonly ok: true } | { readonly ok: false; readonly error: { readonly code: string } };

/** Refusals: logged whatever the message, reads included. */
const REFUSALS = new Set(['RBAC_PERMISSION_DENIED', 'SESSION_INVALID', 'SESSION_AUTHENTICATION_FAILED', 'USER_IS_NOT_LOCAL_SUPERUSER']);

const READ_KINDS = new Set(['get_record', 'get_by_uuid', 'get_by_name_label', 'get_all', 'get_all_records', 'get_all_records_where', 'get_field']);

/** Messages that only read: the generic getters and lookups, explicit `get_*`, and events. */
function onlyReads(method: string): boolean {
  const name = method.startsWith('Async.') ? method.slice(6) : method;
  const m = MESSAGES.get(name);
  if (!m) return true; // unknown methods change nothing (a refusal is still logged)
  if (m.generic) return READ_KINDS.has(m.generic.kind);
  return m.cls === 'event' || m.name.startsWith('get_');
}

interface Who {
  readonly subject: string;
  readonly originator: string;
}

export class AuditLog {
  private fd: number;
  private readonly onHangup = (): void => this.reopen();

  constructor(
    private readonly path: string,
    private readonly store: Store,
    private readonly log: Logger,
  ) {
    this.fd = this.open();
    process.on('SIGHUP', this.onHangup);
  }

  private open(): number {
    return openSync(this.path, 'a', PRIVATE_FILE);
  }

  /** After logrotate moved the file: write to a fresh one at the same path. */
  reopen(): void {
    const old = this.fd;
    this.fd = this.open();
    closeSync(old);
  }

  /**
   * Called before a call runs (who it is may be gone after, e.g. on logout);
   * the returned function records its outcome.
   */
  begin(method: string, raw: readonly unknown[], origin: AuditOrigin): (outcome: AuditOutcome) => void {
    const reads = onlyReads(method);
    const who = this.who(method, raw, origin);
    return (outcome) => {
      const refused = !outcome.ok && REFUSALS.has(outcome.error.code);
      if (reads && !refused) return;
      this.write({
        time: new Date().toISOString(),
        subject: who.subject,
        originator: who.originator,
        address: origin.address,
        message: method,
        outcome: outcome.ok ? 'ok' : refused ? 'refused' : 'failed',
        ...(outcome.ok ? {} : { error: outcome.error.code }),
      });
    };
  }

  /**
   * An HTTP action (import, export, console): logged whether it was allowed
   * or refused; `sessionRef` names the caller's session, when it had one.
   */
  httpAction(permission: string, sessionRef: string, address: string, outcome: AuditOutcome): void {
    const rec = this.store.getAny('session', sessionRef);
    const refused = !outcome.ok && REFUSALS.has(outcome.error.code);
    this.write({
      time: new Date().toISOString(),
      subject: rec ? String(rec.auth_user_name) : '',
      originator: rec ? String(rec.originator) : '',
      address,
      message: permission,
      outcome: outcome.ok ? 'ok' : refused ? 'refused' : 'failed',
      ...(outcome.ok ? {} : { error: outcome.error.code }),
    });
  }

  /** The caller's name and originator, from its session (or the login's own parameters). */
  private who(method: string, raw: readonly unknown[], origin: AuditOrigin): Who {
    if (method === 'session.login_with_password' || method === 'session.slave_local_login_with_password') {
      const subject = origin.localRoot ? 'root (local socket)' : typeof raw[0] === 'string' ? raw[0].slice(0, 256) : '';
      return { subject, originator: typeof raw[3] === 'string' ? raw[3].slice(0, 256) : '' };
    }
    const rec = typeof raw[0] === 'string' ? this.store.get('session', raw[0]) : undefined;
    if (!rec) return { subject: '', originator: '' };
    return { subject: String(rec.auth_user_name), originator: String(rec.originator) };
  }

  private write(entry: Record<string, string>): void {
    try {
      writeSync(this.fd, `${JSON.stringify(entry)}\n`);
    } catch (err) {
      this.log.error({ err }, 'audit log write failed');
    }
  }

  close(): void {
    process.off('SIGHUP', this.onHangup);
    closeSync(this.fd);
  }
}
