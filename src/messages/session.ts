/** Logging in and out, and passwords. */
import { XenApiError } from '../datamodel/api-error.ts';
import { UNKNOWN_ORIGIN, type HandlerTable } from './context.ts';

export const sessionHandlers: HandlerTable = {
  login_with_password: ({ services, origin }, a) =>
    services.sessions.login(String(a.uname), String(a.pwd), String(a.originator ?? ''), origin ?? UNKNOWN_ORIGIN),

  logout: ({ services, session }) => services.sessions.logout(session.ref),

  change_password: async ({ services, session }, a) => {
    if (!services.sessions.accounts.has(session.userName)) {
      throw new XenApiError('USER_IS_NOT_LOCAL_SUPERUSER', session.userName);
    }
    await services.sessions.changePassword(session, String(a.old_pwd), String(a.new_pwd));
  },

  get_all_subject_identifiers: ({ services: { store } }) => [
    ...new Set(store.where('session', (s) => s.auth_user_sid !== '').map(([, s]) => String(s.auth_user_sid))),
  ],

  logout_subject_identifier: ({ services: { store, sessions } }, a) => {
    for (const [ref] of store.where('session', (s) => s.auth_user_sid === a.subject_identifier)) sessions.logout(ref);
  },
};
