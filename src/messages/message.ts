/** Alerts for administrators (xapi's "messages"): create, query, destroy. */
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime } from '../datamodel/types.ts';
import type { DbRecord, Store } from '../db/store.ts';
import type { HandlerTable } from './context.ts';
import { compileWhere } from './where.ts';

const records = (store: Store, pred: (m: DbRecord) => boolean = () => true): Record<string, DbRecord> =>
  Object.fromEntries(store.where('message', pred));

export const messageHandlers: HandlerTable = {
  create: ({ services: { store } }, a) => {
    if (String(a.name) === '') throw new XenApiError('INVALID_VALUE', 'name', '');
    return store.transact((tx) =>
      tx.create('message', { name: a.name, priority: a.priority, cls: a.cls, obj_uuid: a.obj_uuid, body: a.body, timestamp: formatDateTime(new Date()) }),
    );
  },
  destroy: ({ services: { store } }, a) => {
    store.must('message', a.self as string);
    store.transact((tx) => tx.delete('message', a.self as string));
  },
  destroy_many: ({ services: { store } }, a) => {
    store.transact((tx) => (a.messages as string[]).forEach((m) => tx.get('message', m) && tx.delete('message', m)));
  },
  get_record: ({ services: { store } }, a) => store.must('message', a.self as string),
  get_by_uuid: ({ services: { store } }, a) => {
    const ref = store.byUuid('message', a.uuid as string);
    if (!ref) throw new XenApiError('UUID_INVALID', 'message', a.uuid as string);
    return ref;
  },
  get_all: ({ services: { store } }) => store.refs('message'),
  get_all_records: ({ services: { store } }) => records(store),
  get_all_records_where: ({ services: { store } }, a) => records(store, compileWhere(String(a.expr))),
  get_since: ({ services: { store } }, a) => records(store, (m) => String(m.timestamp) > String(a.since)),
  get: ({ services: { store } }, a) => records(store, (m) => m.cls === a.cls && m.obj_uuid === a.obj_uuid && String(m.timestamp) > String(a.since)),
};
