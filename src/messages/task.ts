/**
 * Tasks made by clients, cancellation and clean-up. Every change to a task
 * is its owner's (or pool-operator's and above), as xapi's task rules say.
 */
import type { Args, CallContext, HandlerTable, LooseHandler } from './context.ts';
import { runGeneric, setField } from './generic.ts';

/** The task a message names (its first parameter), checked against the caller. */
const ownTask = (ctx: CallContext, args: Args): string => {
  const ref = args[ctx.message.params[0].name] as string;
  ctx.services.tasks.assertMayChange(ctx.session, ref);
  return ref;
};

/** A handler that runs only once the caller may change the task. */
const owned =
  (then: LooseHandler): LooseHandler =>
  (ctx, args) => {
    ownTask(ctx, args);
    return then(ctx, args);
  };

export const taskHandlers: HandlerTable = {
  create: ({ services, session }, a) => services.tasks.create(String(a.label), String(a.description), session.ref, { external: true }).ref,
  cancel: (ctx, a) => ctx.services.tasks.cancel(ownTask(ctx, a)),
  destroy: (ctx, a) => ctx.services.tasks.destroy(ownTask(ctx, a)),
  set_status: owned(setField('status')),
  set_progress: owned(setField('progress')),
  set_result: owned(setField('result')),
  set_error_info: owned(setField('error_info')),
  set_other_config: owned(runGeneric),
  add_to_other_config: owned(runGeneric),
  remove_from_other_config: owned(runGeneric),
};
