/** Tasks made by clients, cancellation and clean-up. */
import type { HandlerTable } from './context.ts';

const set = (field: string) =>
  ((ctx, a) => {
    ctx.services.store.transact((tx) => tx.update('task', a.self as string, { [field]: a.value }));
  }) satisfies HandlerTable[string];

export const taskHandlers: HandlerTable = {
  create: ({ services, session }, a) => services.tasks.create(String(a.label), String(a.description), session.ref, { external: true }).ref,
  cancel: ({ services }, a) => services.tasks.cancel(a.task as string),
  destroy: ({ services }, a) => services.tasks.destroy(a.self as string),
  set_status: set('status'),
  set_progress: set('progress'),
  set_result: set('result'),
  set_error_info: set('error_info'),
};
