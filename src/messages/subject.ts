/**
 * Subjects: who may log in and with which roles. Xenon's local accounts are
 * subjects whose identifier is `local:<name>`, with a password set by
 * the Xenon extension subject.set_password.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { LOCAL_PREFIX } from '../auth/sessions.ts';
import { ROOT } from '../auth/accounts.ts';
import type { subject_handlers } from './generated/handlers.ts';

const localName = (sid: unknown): string | undefined =>
  typeof sid === 'string' && sid.startsWith(LOCAL_PREFIX) ? sid.slice(LOCAL_PREFIX.length) : undefined;

export const subjectHandlers: subject_handlers = {
  create: ({ services: { store } }, a) => {
    const { subject_identifier: sid = '', other_config = {}, roles = [] } = a.args;
    if (sid === '' || localName(sid) === ROOT) throw new XenApiError('INVALID_VALUE', 'subject_identifier', sid);
    if (store.where('subject', (s) => s.subject_identifier === sid).length) {
      throw new XenApiError('SUBJECT_ALREADY_EXISTS');
    }
    const known = roles.filter((r) => store.get('role', r) !== undefined);
    return store.transact((tx) => tx.create('subject', { subject_identifier: sid, other_config, roles: known }));
  },

  destroy: ({ services: { store, sessions } }, a) => {
    const rec = store.must('subject', a.self);
    for (const [ref] of store.where('session', (s) => s.subject === a.self)) sessions.logout(ref);
    store.transact((tx) => tx.delete('subject', a.self));
    const name = localName(rec.subject_identifier);
    if (name) sessions.accounts.remove(name);
    sessions.invalidate();
  },

  add_to_roles: ({ services: { store, sessions } }, a) => {
    const { roles } = store.must('subject', a.self);
    store.must('role', a.role);
    if (roles.includes(a.role)) throw new XenApiError('ROLE_ALREADY_EXISTS');
    store.transact((tx) => tx.update('subject', a.self, { roles: [...roles, a.role] }));
    sessions.invalidate();
  },

  remove_from_roles: ({ services: { store, sessions } }, a) => {
    const { roles } = store.must('subject', a.self);
    if (!roles.includes(a.role)) throw new XenApiError('ROLE_NOT_FOUND');
    store.transact((tx) => tx.update('subject', a.self, { roles: roles.filter((r) => r !== a.role) }));
    sessions.invalidate();
  },

  get_permissions_name_label: ({ services: { sessions } }, a) => sessions.subjectRoles(a.self),

  set_password: async ({ services: { store, sessions } }, a) => {
    const rec = store.must('subject', a.self);
    const name = localName(rec.subject_identifier);
    if (!name) throw new XenApiError('INVALID_VALUE', 'subject_identifier', rec.subject_identifier);
    if (a.new_password.length === 0) throw new XenApiError('CHANGE_PASSWORD_REJECTED', 'The new password is empty');
    await sessions.accounts.setPassword(name, a.new_password);
  },
};
