/** Tasks made by clients, cancellation and clean-up. */
import type { HandlerTable } from './context.ts';
import { setField } from './generic.ts';

export const taskHandlers: HandlerTable = {
  create: ({ services, session }, a) => services.tasks.create(String(a.label), String(a.description), session.ref, { external: true }).ref,
  cancel: ({ services }, a) => services.tasks.cancel(a.task as string),
  destroy: ({ services }, a) => services.tasks.destroy(a.self as string),
  set_status: setField('status'),
  set_progress: setField('progress'),
  set_result: setField('result'),
  set_error_info: setField('error_info'),
};
