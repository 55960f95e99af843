/** Logging in and out, and passwords. */
import { XenApiError } from '../datamodel/api-error.ts';
import { notImplemented, UNKNOWN_ORIGIN } from './context.ts';
import type { session_handlers } from './generated/handlers.ts';

export const sessionHandlers: session_handlers = {
  login_with_password: ({ services, origin }, a) =>
    services.sessions.login(a.uname, a.pwd, a.originator, origin ?? UNKNOWN_ORIGIN),

  logout: ({ services, session }) => services.sessions.logout(session.ref),

  change_password: async ({ services, session }, a) => {
    if (!services.sessions.accounts.has(session.userName)) {
      throw new XenApiError('USER_IS_NOT_LOCAL_SUPERUSER', session.userName);
    }
    await services.sessions.changePassword(session, a.old_pwd, a.new_pwd);
  },

  get_all_subject_identifiers: ({ services: { store } }) => [
    ...new Set(store.where('session', (s) => s.auth_user_sid !== '').map(([, s]) => s.auth_user_sid)),
  ],

  logout_subject_identifier: ({ services: { store, sessions } }, a) => {
    for (const [ref] of store.where('session', (s) => s.auth_user_sid === a.subject_identifier)) sessions.logout(ref);
  },

  local_logout: ({ services, session }) => services.sessions.localLogout(session.ref),
  create_from_db_file: notImplemented,
  slave_local_login_with_password: ({ services, origin }, a) => services.sessions.loginLocal(a.uname, a.pwd, origin ?? UNKNOWN_ORIGIN),
};
