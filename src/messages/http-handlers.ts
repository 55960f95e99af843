/**
 * What xapi's HTTP handlers (/console, /import*, /export*) have in common:
 * the session from `session_id=` or its cookie, the role check from the
 * declared HTTP action (datamodel/http-actions.ts), the client's own task
 * (`task_id=`) or one of ours, and failures as text.
 */
import type http from 'node:http';
import type { SessionInfo } from '../auth/sessions.ts';
import { XenApiError } from '../datamodel/api-error.ts';
import { httpActionFor } from '../datamodel/http-actions.ts';
import type { Services } from './context.ts';

export interface HttpTask {
  readonly ref: string;
  progress(fraction: number): void;
}

/** The session ref from the query or the cookie, as xapi accepts either. */
export function sessionIdOf(req: http.IncomingMessage, url: URL): string {
  const q = url.searchParams.get('session_id');
  if (q) return q;
  const cookie = /(?:^|;\s*)session_id=([^;]+)/.exec(req.headers.cookie ?? '');
  if (!cookie) return '';
  try {
    return decodeURIComponent(cookie[1]);
  } catch {
    return ''; // a broken escape names no session: SESSION_INVALID, not a failure of ours
  }
}

/**
 * The caller's session, which must hold a role of the HTTP action declared
 * for this method and path; RBAC_PERMISSION_DENIED names xapi's `http/<action>`.
 * `loggedIn` is a session the handler opened itself (basic authentication).
 */
export function authorize(services: Services, req: http.IncomingMessage, url: URL, loggedIn?: string): SessionInfo {
  const action = httpActionFor(req.method, url.pathname);
  const permission = action?.permission ?? `http/${url.pathname}`;
  const sessionRef = loggedIn ?? sessionIdOf(req, url);
  const address = req.socket.remoteAddress ?? '';
  try {
    if (!action) throw new XenApiError('RBAC_PERMISSION_DENIED', permission, 'No HTTP action is declared here');
    // imports and exports (the actions that take a task) work on the pool's records: the master's job
    if (action.task && services.member) throw new XenApiError('HOST_IS_SLAVE', services.member.master);
    const session = services.sessions.check(sessionRef);
    if (!session.isLocalSuperuser && !action.roles.some((r) => session.roles.has(r))) {
      throw new XenApiError('RBAC_PERMISSION_DENIED', permission, 'No permission in the role of this session to perform this operation');
    }
    services.audit.httpAction(permission, sessionRef, address, { ok: true });
    return session;
  } catch (e) {
    if (e instanceof XenApiError) services.audit.httpAction(permission, sessionRef, address, { ok: false, error: e });
    throw e;
  }
}

/** The client's task (task_id=…, its own: see Tasks.assertMayChange), whose progress we move, or a new one of ours. */
export function taskOf(services: Services, url: URL, label: string, session: SessionInfo): HttpTask {
  const given = url.searchParams.get('task_id');
  if (!given || !services.store.get('task', given)) return services.tasks.create(label, '', session.ref);
  services.tasks.assertMayChange(session, given);
  let last = 0;
  return {
    ref: given,
    progress: (f) => {
      if (f - last < 0.01 && f < 1) return;
      last = f;
      if (services.store.get('task', given)?.status === 'pending') services.store.transact((tx) => void tx.update('task', given, { progress: f }));
    },
  };
}

/** Ends a task that is still pending: success with `result`, or the error. */
export function finishTask(services: Services, task: HttpTask, result: string, error?: XenApiError): void {
  const rec = services.store.get('task', task.ref);
  if (!rec || rec.status !== 'pending') return;
  if (error) services.tasks.fail(task.ref, error.description);
  else services.tasks.succeed(task.ref, result);
}

/** A failure as plain text with the XenAPI error description; a started reply is cut. */
export function failHttp(res: http.ServerResponse, status: number, e: XenApiError): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'Content-Type': 'text/plain' });
  res.end(`${e.description.join(' ')}\n`);
}
