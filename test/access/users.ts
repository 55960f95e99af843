/** Accounts for each role of xapi's ladder, logged in, for tests that probe as each of them. */
import { XenApiClient } from '../../src/client/client.ts';
import type { LadderRole } from '../../src/datamodel/dsl.ts';
import type { TestServer } from '../helpers/server.ts';

export async function loginAs(t: TestServer, roles: readonly LadderRole[]): Promise<Map<LadderRole, XenApiClient>> {
  const all = await t.client.api.role.get_all_records();
  const out = new Map<LadderRole, XenApiClient>();
  for (const role of roles) {
    const roleRef = Object.entries(all).find(([, r]) => r.name_label === role)![0];
    const subject = await t.client.api.subject.create({ subject_identifier: `local:${role}-user`, other_config: { 'subject-name': `${role}-user` }, roles: [roleRef] } as never);
    await t.client.call('subject.set_password', [t.client.session, subject, `pw-${role}`]);
    const c = new XenApiClient(t.url);
    await c.login(`${role}-user`, `pw-${role}`);
    out.set(role, c);
  }
  return out;
}
