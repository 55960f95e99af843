/**
 * Subjects: who may log in and with which roles. Xenon's local accounts are
 * subjects whose identifier is `local:<name>`, with a password set by
 * the Xenon extension subject.set_password.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { LOCAL_PREFIX } from '../auth/sessions.ts';
import { ROOT } from '../auth/accounts.ts';
import { creatableFields } from './generic.ts';
import type { HandlerTable } from './context.ts';

const localName = (sid: unknown): string | undefined =>
  typeof sid === 'string' && sid.startsWith(LOCAL_PREFIX) ? sid.slice(LOCAL_PREFIX.length) : undefined;

export const subjectHandlers: HandlerTable = {
  create: ({ services: { store } }, a) => {
    const fields = creatableFields('subject', a.args as Record<string, unknown>);
    const sid = String(fields.subject_identifier ?? '');
    if (sid === '' || localName(sid) === ROOT) throw new XenApiError('INVALID_VALUE', 'subject_identifier', sid);
    if (store.where('subject', (s) => s.subject_identifier === sid).length) {
      throw new XenApiError('SUBJECT_ALREADY_EXISTS');
    }
    const roles = (a.args as Record<string, unknown>).roles;
    const roleRefs = Array.isArray(roles) ? roles.filter((r): r is string => typeof r === 'string' && store.get('role', r) !== undefined) : [];
    return store.transact((tx) => tx.create('subject', { ...fields, roles: roleRefs }));
  },

  destroy: ({ services: { store, sessions } }, a) => {
    const rec = store.must('subject', a.self as string);
    for (const [ref] of store.where('session', (s) => s.subject === a.self)) sessions.logout(ref);
    store.transact((tx) => tx.delete('subject', a.self as string));
    const name = localName(rec.subject_identifier);
    if (name) sessions.accounts.remove(name);
    sessions.invalidate();
  },

  add_to_roles: ({ services: { store, sessions } }, a) => {
    const rec = store.must('subject', a.self as string);
    store.must('role', a.role as string);
    const roles = rec.roles as string[];
    if (roles.includes(a.role as string)) throw new XenApiError('ROLE_ALREADY_EXISTS');
    store.transact((tx) => tx.update('subject', a.self as string, { roles: [...roles, a.role] }));
    sessions.invalidate();
  },

  remove_from_roles: ({ services: { store, sessions } }, a) => {
    const rec = store.must('subject', a.self as string);
    const roles = rec.roles as string[];
    if (!roles.includes(a.role as string)) throw new XenApiError('ROLE_NOT_FOUND');
    store.transact((tx) => tx.update('subject', a.self as string, { roles: roles.filter((r) => r !== a.role) }));
    sessions.invalidate();
  },

  get_permissions_name_label: ({ services: { sessions } }, a) => sessions.subjectRoles(a.self as string),

  set_password: async ({ services: { store, sessions } }, a) => {
    const rec = store.must('subject', a.self as string);
    const name = localName(rec.subject_identifier);
    if (!name) throw new XenApiError('INVALID_VALUE', 'subject_identifier', String(rec.subject_identifier));
    if (String(a.new_password).length === 0) throw new XenApiError('CHANGE_PASSWORD_REJECTED', 'The new password is empty');
    await sessions.accounts.setPassword(name, String(a.new_password));
  },
};
