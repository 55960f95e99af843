/**
 * Sessions are bounded as xapi bounds them: at most 500 per user name, and
 * for root 500 per originator; past that the least recently used go. A client
 * that never logs out cannot grow the database without limit. (Logins go
 * through the local root socket, which needs no password hashing, to be quick.)
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { SESSION_LIMITS } from '../../src/auth/sessions.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

let t: TestServer;
let agent: http.Agent;

before(async () => {
  t = await startTestServer();
  agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
});
after(async () => {
  agent.destroy();
  await t.close();
});

function rpc(method: string, params: unknown[]): Promise<{ result?: string; error?: { message: string } }> {
  const body = JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 });
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: join(t.dataDir, 'xapi'), path: '/jsonrpc', method: 'POST', agent, headers: { 'Content-Type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve(JSON.parse(text) as { result?: string; error?: { message: string } }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const login = async (user: string, originator: string): Promise<string> => (await rpc('session.login_with_password', [user, '', '2.21', originator])).result!;
const alive = async (ref: string): Promise<boolean> => (await rpc('pool.get_all', [ref])).error?.message !== 'SESSION_INVALID';

for (const [user, limit] of [['root', SESSION_LIMITS.perOriginator], ['someone', SESSION_LIMITS.perUserName]] as const) {
  test(`${user}: at most ${limit} sessions, the least recently used destroyed first`, { timeout: 120_000 }, async () => {
    assert.equal(limit, 500, 'xapi’s limit');
    const refs: string[] = [];
    for (let i = 0; i < limit; i++) refs.push(await login(user, 'never-logs-out'));
    assert.ok(await alive(refs[0])); // used just now: the most recent
    const extra: string[] = [];
    for (let i = 0; i < 10; i++) extra.push(await login(user, 'never-logs-out'));
    const states = await Promise.all(refs.map(alive));
    assert.equal(states[0], true, 'the recently used session stays');
    assert.deepEqual(states.slice(1, 11), Array(10).fill(false), 'the least recently used went');
    assert.ok(states.slice(11).every(Boolean));
    for (const r of extra) assert.ok(await alive(r));
    if (user === 'root') {
      // root's sessions count by originator: another client's group is apart
      const other = await login(user, 'another-client');
      assert.ok(await alive(other));
      assert.ok(await alive(extra[0]));
    }
  });
}
