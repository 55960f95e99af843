/**
 * Tasks: records that track a long operation (every Async call makes one),
 * their progress, result and cancellation, and the collection of old ones.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { expandRoles, type Role } from '../datamodel/dsl.ts';
import { formatDateTime } from '../datamodel/types.ts';
import type { Store } from '../db/store.ts';

/** Who asks to change a task. */
export interface TaskActor {
  readonly ref: string;
  readonly subject: string;
  readonly roles: ReadonlySet<Role>;
  readonly isLocalSuperuser: boolean;
}

/** xapi's `task.destroy/any`: changing another subject's task needs pool-operator or above. */
export const TASK_ANY_PERMISSION = 'task.destroy/any';
const TASK_ANY_ROLES = expandRoles('pool-operator');

export interface TaskHandle {
  readonly ref: string;
  readonly signal: AbortSignal;
  /** Progress from 0 to 1. Writes are throttled to keep the database quiet. */
  progress(fraction: number): void;
  /** Throws TASK_CANCELLED once cancellation was asked for. */
  checkCancelled(): void;
}

export class Tasks {
  private readonly controllers = new Map<string, AbortController>();
  private readonly lastProgress = new Map<string, number>();
  /** The subject (session's `subject`; the null ref for root) that made each task. */
  private readonly owners = new Map<string, string>();

  constructor(
    private readonly store: Store,
    private readonly host: () => string,
  ) {}

  /**
   * A new pending task. `external` tasks are made by clients (task.create):
   * no work of ours runs behind them, so cancelling one ends it at once.
   */
  create(label: string, description: string, session: string, opts: { cancellable?: boolean; external?: boolean } = {}): TaskHandle {
    const ref = this.store.transact((tx) => {
      const r = tx.create('task', {
        name_label: label,
        name_description: description,
        created: formatDateTime(new Date()),
        status: 'pending',
        resident_on: this.host(),
        progress: 0,
        allowed_operations: opts.cancellable === false ? [] : ['cancel'],
        other_config: {},
      });
      const s = tx.get('session', session);
      if (s) tx.update('session', session, { tasks: [...(s.tasks as string[]), r] });
      if (s) this.owners.set(r, String(s.subject));
      return r;
    });
    const ctl = new AbortController();
    if (!opts.external) this.controllers.set(ref, ctl);
    return this.handle(ref, ctl.signal);
  }

  /**
   * As xapi's task rules: a subject changes, cancels and destroys its own
   * tasks (made by any of its sessions); another's needs pool-operator or above.
   */
  assertMayChange(actor: TaskActor, ref: string): void {
    this.store.must('task', ref);
    if (actor.isLocalSuperuser || TASK_ANY_ROLES.some((r) => actor.roles.has(r))) return;
    if (this.ownerOf(ref) === actor.subject) return;
    throw new XenApiError('RBAC_PERMISSION_DENIED', TASK_ANY_PERMISSION, 'No permission in the role of this session to change a task of another subject');
  }

  /** The task's maker; after a restart, found through the sessions that list it. */
  private ownerOf(ref: string): string | undefined {
    const known = this.owners.get(ref);
    if (known !== undefined) return known;
    const holder = this.store.where('session', (s) => (s.tasks as string[]).includes(ref))[0];
    return holder ? String(holder[1].subject) : undefined;
  }

  private handle(ref: string, signal: AbortSignal): TaskHandle {
    return {
      ref,
      signal,
      progress: (fraction) => this.setProgress(ref, fraction),
      checkCancelled: () => {
        if (signal.aborted) throw new XenApiError('TASK_CANCELLED', ref);
      },
    };
  }

  private setProgress(ref: string, fraction: number): void {
    const p = Math.max(0, Math.min(1, fraction));
    const last = this.lastProgress.get(ref) ?? 0;
    if (p - last < 0.01 && p < 1) return;
    this.lastProgress.set(ref, p);
    const rec = this.store.get('task', ref);
    if (rec && rec.status === 'pending') this.store.transact((tx) => tx.update('task', ref, { progress: p }));
  }

  succeed(ref: string, resultXml: string): void {
    this.finish(ref, { status: 'success', result: resultXml, progress: 1 });
  }

  fail(ref: string, description: readonly string[]): void {
    const cancelled = description[0] === 'TASK_CANCELLED';
    this.finish(ref, { status: cancelled ? 'cancelled' : 'failure', error_info: [...description] });
  }

  private finish(ref: string, patch: Record<string, unknown>): void {
    this.controllers.delete(ref);
    this.lastProgress.delete(ref);
    if (!this.store.get('task', ref)) return; // destroyed meanwhile
    this.store.transact((tx) =>
      tx.update('task', ref, { ...patch, finished: formatDateTime(new Date()), allowed_operations: [], current_operations: {} }),
    );
  }

  /** task.cancel: running work sees the abort; a client-made task is marked cancelled. */
  cancel(ref: string): void {
    const rec = this.store.must('task', ref);
    if (rec.status !== 'pending') {
      throw new XenApiError('OPERATION_NOT_ALLOWED', `task ${ref} is ${String(rec.status)}, not pending`);
    }
    if (!(rec.allowed_operations as string[]).includes('cancel')) {
      throw new XenApiError('OPERATION_NOT_ALLOWED', `task ${ref} cannot be cancelled`);
    }
    const ctl = this.controllers.get(ref);
    if (ctl) {
      this.store.transact((tx) => tx.update('task', ref, { status: 'cancelling', current_operations: { [ref]: 'cancel' } }));
      ctl.abort();
    } else this.fail(ref, ['TASK_CANCELLED', ref]);
  }

  /**
   * Destroys finished tasks older than `maxAgeMs`, and tasks whose session is
   * gone once they have finished. Returns how many.
   */
  collect(maxAgeMs: number, now = Date.now()): number {
    const doomed = this.store
      .where('task', (t) => t.status !== 'pending' && t.status !== 'cancelling')
      .filter(([, t]) => {
        const finished = Date.parse(String(t.finished).replace(/^(\d{4})(\d{2})(\d{2})T/, '$1-$2-$3T'));
        return Number.isFinite(finished) && now - finished > maxAgeMs;
      })
      .map(([ref]) => ref);
    if (doomed.length) this.store.transact((tx) => doomed.forEach((r) => tx.delete('task', r)));
    doomed.forEach((r) => this.owners.delete(r));
    return doomed.length;
  }

  /** Pending tasks left by a previous run can never finish: fail them. */
  failOrphans(): void {
    for (const [ref] of this.store.where('task', (t) => t.status === 'pending' || t.status === 'cancelling')) {
      if (!this.controllers.has(ref)) this.fail(ref, ['INTERNAL_ERROR', 'the toolstack restarted while this task ran']);
    }
  }

  destroy(ref: string): void {
    this.store.must('task', ref);
    this.controllers.get(ref)?.abort();
    this.controllers.delete(ref);
    this.owners.delete(ref);
    this.store.transact((tx) => tx.delete('task', ref));
  }
}
