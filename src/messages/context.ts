/** What the behaviour of a message gets to work with. */
import type { Logger } from 'pino';
import type { AuditLog } from '../auth/audit.ts';
import type { Sessions, SessionInfo } from '../auth/sessions.ts';
import type { ModelMessage } from '../datamodel/model.ts';
import type { Store } from '../db/store.ts';
import type { TaskHandle, Tasks } from '../tasks/manager.ts';

export interface Services {
  readonly store: Store;
  readonly sessions: Sessions;
  readonly tasks: Tasks;
  readonly log: Logger;
  readonly audit: AuditLog;
  readonly dataDir: string;
  /** This host's record and its pool's. */
  hostRef(): string;
  poolRef(): string;
  /** Subsystems attach here as they are wired in by server.ts. */
  readonly ext: Record<string, unknown>;
}

/** Where a call came from, as the HTTP layer saw it. */
export interface CallOrigin {
  /** The client's address ('' when unknown): logins are throttled by it, the audit trail names it. */
  readonly address: string;
  /** Came in on the local root socket: a login there is the local superuser's. */
  readonly localRoot: boolean;
}

export const UNKNOWN_ORIGIN: CallOrigin = { address: '', localRoot: false };

export interface CallContext {
  readonly services: Services;
  readonly session: SessionInfo;
  /** Absent for calls made inside the daemon (HTTP handlers reusing message helpers). */
  readonly origin?: CallOrigin;
  readonly message: ModelMessage;
  /** Set for Async calls (and for long sync calls that want progress). */
  readonly task: TaskHandle | null;
}

export type Args = Readonly<Record<string, unknown>>;
export type Handler = (ctx: CallContext, args: Args) => unknown;
/** Handlers of one class, keyed by message name. */
export type HandlerTable = Readonly<Record<string, Handler>>;
