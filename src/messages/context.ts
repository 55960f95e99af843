/** What the behaviour of a message gets to work with. */
import type { Logger } from 'pino';
import type { Sessions, SessionInfo } from '../auth/sessions.ts';
import type { ModelMessage } from '../datamodel/model.ts';
import type { Store } from '../db/store.ts';
import type { TaskHandle, Tasks } from '../tasks/manager.ts';

export interface Services {
  readonly store: Store;
  readonly sessions: Sessions;
  readonly tasks: Tasks;
  readonly log: Logger;
  readonly dataDir: string;
  /** This host's record and its pool's. */
  hostRef(): string;
  poolRef(): string;
  /** Subsystems attach here as they are wired in by server.ts. */
  readonly ext: Record<string, unknown>;
}

export interface CallContext {
  readonly services: Services;
  readonly session: SessionInfo;
  readonly message: ModelMessage;
  /** Set for Async calls (and for long sync calls that want progress). */
  readonly task: TaskHandle | null;
}

export type Args = Readonly<Record<string, unknown>>;
export type Handler = (ctx: CallContext, args: Args) => unknown;
/** Handlers of one class, keyed by message name. */
export type HandlerTable = Readonly<Record<string, Handler>>;
