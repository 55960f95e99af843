/** Every class's explicit behaviour, by class name. */
import type { HandlerTable } from './context.ts';
import { eventHandlers } from './event.ts';
import { hostHandlers, poolHandlers } from './host.ts';
import { messageHandlers } from './message.ts';
import { roleHandlers } from './role.ts';
import { sessionHandlers } from './session.ts';
import { subjectHandlers } from './subject.ts';
import { taskHandlers } from './task.ts';

export const CORE_HANDLERS: Readonly<Record<string, HandlerTable>> = {
  event: eventHandlers,
  host: hostHandlers,
  pool: poolHandlers,
  message: messageHandlers,
  role: roleHandlers,
  session: sessionHandlers,
  subject: subjectHandlers,
  task: taskHandlers,
};
