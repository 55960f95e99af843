/**
 * Tasks made by clients, cancellation and clean-up. Every change to a task
 * is its owner's (or pool-operator's and above), as xapi's task rules say.
 */
import type { Ref } from '../datamodel/generated/records.ts';
import type { CallContext, Handler } from './context.ts';
import { runGeneric, setField } from './generic.ts';
import type { task_handlers } from './generated/handlers.ts';

/** The task, once the caller is found to be allowed to change it. */
const mayChange = (ctx: CallContext, task: Ref<'task'>): Ref<'task'> => {
  ctx.services.tasks.assertMayChange(ctx.session, task);
  return task;
};

/** A handler that runs only once the caller may change the task. */
const owned =
  <A>(then: Handler<A, void>): Handler<A & { readonly self: Ref<'task'> }, void> =>
  (ctx, a) => {
    mayChange(ctx, a.self);
    return then(ctx, a);
  };

/** The derived map setters, guarded. */
const generic: Handler<Readonly<Record<string, unknown>>, void> = (ctx, a) => {
  runGeneric(ctx, a);
};

export const taskHandlers: task_handlers = {
  create: ({ services, session }, a) => services.tasks.create(a.label, a.description, session.ref, { external: true }).ref,
  cancel: (ctx, a) => ctx.services.tasks.cancel(mayChange(ctx, a.task)),
  destroy: (ctx, a) => ctx.services.tasks.destroy(mayChange(ctx, a.self)),
  set_status: owned(setField('task', 'status')),
  set_progress: owned(setField('task', 'progress')),
  set_result: owned(setField('task', 'result')),
  set_error_info: owned(setField('task', 'error_info')),
  set_other_config: owned(generic),
  add_to_other_config: owned(generic),
  remove_from_other_config: owned(generic),
};
