/** Roles: which messages each of xapi's roles may call, derived from the datamodel. */
import { MESSAGES } from '../datamodel/model.ts';
import type { Store } from '../db/store.ts';
import type { role_handlers } from './generated/handlers.ts';

/** Permission names as xapi spells them: the message's wire name in lower case. */
function permissionsOf(role: string): string[] {
  return [...MESSAGES.values()].filter((m) => !m.hidden && m.roles.some((r) => r === role)).map((m) => m.wireName.toLowerCase());
}

const roleName = (store: Store, ref: string): string => store.must('role', ref).name_label;

export const roleHandlers: role_handlers = {
  get_permissions_name_label: ({ services: { store } }, a) => permissionsOf(roleName(store, a.self)),
  // xapi's permissions are internal roles of their own; Xenon's roles have no such children
  get_permissions: ({ services: { store } }, a) => store.must('role', a.self).subroles,
  get_by_permission_name_label: ({ services: { store } }, a) =>
    store.where('role', (r) => permissionsOf(r.name_label).includes(a.label.toLowerCase())).map(([ref]) => ref),
  get_by_permission: ({ services: { store } }, a) => {
    const label = store.get('role', a.permission)?.name_label ?? '';
    return store.where('role', (r) => permissionsOf(r.name_label).includes(label)).map(([ref]) => ref);
  },
};
