/** Alerts for administrators (xapi's "messages"): create, query, destroy. */
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime } from '../datamodel/types.ts';
import type { message_record } from '../datamodel/generated/records.ts';
import type { DbRecord, Row, Store } from '../db/store.ts';
import type { message_handlers } from './generated/handlers.ts';
import { compileWhere } from './where.ts';

const records = (store: Store, pred: (m: Row<'message'>) => boolean = () => true): Record<string, message_record> =>
  Object.fromEntries(store.where('message', pred));

/** `get_all_records_where` filters compile for any record. */
const matching = (expr: string): ((m: Row<'message'>) => boolean) => {
  const where: (r: DbRecord) => boolean = compileWhere(expr);
  return (m) => where({ ...m });
};

export const messageHandlers: message_handlers = {
  create: ({ services: { store } }, a) => {
    if (a.name === '') throw new XenApiError('INVALID_VALUE', 'name', '');
    return store.transact((tx) =>
      tx.create('message', { name: a.name, priority: a.priority, cls: a.cls, obj_uuid: a.obj_uuid, body: a.body, timestamp: formatDateTime(new Date()) }),
    );
  },
  destroy: ({ services: { store } }, a) => {
    store.must('message', a.self);
    store.transact((tx) => tx.delete('message', a.self));
  },
  destroy_many: ({ services: { store } }, a) => {
    store.transact((tx) => a.messages.forEach((m) => tx.get('message', m) && tx.delete('message', m)));
  },
  get_record: ({ services: { store } }, a) => store.must('message', a.self),
  get_by_uuid: ({ services: { store } }, a) => {
    const ref = store.byUuid('message', a.uuid);
    if (!ref) throw new XenApiError('UUID_INVALID', 'message', a.uuid);
    return ref;
  },
  get_all: ({ services: { store } }) => store.refs('message'),
  get_all_records: ({ services: { store } }) => records(store),
  get_all_records_where: ({ services: { store } }, a) => records(store, matching(a.expr)),
  get_since: ({ services: { store } }, a) => records(store, (m) => m.timestamp > a.since),
  get: ({ services: { store } }, a) => records(store, (m) => m.cls === a.cls && m.obj_uuid === a.obj_uuid && m.timestamp > a.since),
};
