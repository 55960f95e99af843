/**
 * Seeded fuzzing of the edge, from outside: every message of the datamodel with
 * random (mostly wrongly typed) arguments on both codecs, with a read-only and
 * a root session; mangled bodies; hostile targets and headers. The daemon must
 * live, every reply must be well-formed, and refused calls must leave the
 * database as it was. XENON_FUZZ_SEED=<n> replays a run; the seed is printed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { enumValues, getClass, MESSAGES, type ModelMessage } from '../../src/datamodel/model.ts';
import type { XType } from '../../src/datamodel/types.ts';
import { storagePlugin, xenopsPlugin } from '../../src/plugins.ts';
import { decodeMethodResponse, encodeMethodCall } from '../../src/wire/xmlrpc.ts';
import { XenApiClient } from '../../src/client/client.ts';
import { ROOT_PASSWORD, startTestServer, type TestServer } from '../helpers/server.ts';
import { portOf, rawRequest } from '../helpers/raw-http.ts';

const SEED = Number(process.env.XENON_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
process.stdout.write(`# fuzz seed ${SEED} (XENON_FUZZ_SEED=${SEED} replays it)\n`);

/** mulberry32: small, seedable, good enough to pick cases. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = prng(SEED);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
const chance = (p: number): boolean => rand() < p;

const HOSTILE_STRINGS = [
  '', ' ', 'a\u0001b', '\u0000', '\ud800', 'x\udfff', '\ufffe', '\uffff', '<x>&amp;', ']]>', '\r\n', 'OpaqueRef:NULL', 'OpaqueRef:bogus',
  'OpaqueRef:00000000-0000-0000-0000-000000000000', '9223372036854775808', '-9223372036854775809', '1e300', '1.5', '12abc', 'NaN',
  'Infinity', 'true', 'halted', '../../etc/passwd', '%zz', 'x'.repeat(4096), '\u{1F600}', 'caf\u00e9', '19700101T00:00:00Z', 'not-a-uuid',
];
const HOSTILE_NUMBERS = [0, -1, 1, 1.5, -0.5, 2 ** 31, 2 ** 53 + 2, 2 ** 63, -(2 ** 64), 1e300, -1e300];

/** Any value at all, nested a little. */
function anyValue(depth = 0, refs: readonly string[] = []): unknown {
  const r = rand();
  if (r < 0.3) return pick(HOSTILE_STRINGS);
  if (r < 0.45) return pick(HOSTILE_NUMBERS);
  if (r < 0.5) return chance(0.5);
  if (r < 0.55) return null;
  if (r < 0.65 && refs.length) return pick(refs);
  if (depth > 3) return pick(HOSTILE_STRINGS);
  if (r < 0.8) return Array.from({ length: Math.floor(rand() * 4) }, () => anyValue(depth + 1, refs));
  const o: Record<string, unknown> = {};
  for (let i = Math.floor(rand() * 4); i > 0; i--) o[pick(HOSTILE_STRINGS)] = anyValue(depth + 1, refs);
  return o;
}

/** A value of the declared type, often an odd one: reaches the handler. */
function wellTyped(t: XType, depth = 0): unknown {
  switch (t.kind) {
    case 'string': return pick(['', 'x', 'caf\u00e9 \u{1F600}', '<&>', 'OpaqueRef:NULL', '../x', ' ', 'a'.repeat(300), 'true', '0']);
    case 'enum': return pick(enumValues(t.name) ?? ['x']);
    case 'int': return pick([0, 1, -1, 2 ** 31, '9223372036854775807', '-9223372036854775808', 4096]);
    case 'float': return pick([0, -1, 0.5, 1e300, '2.5']);
    case 'bool': return chance(0.5);
    case 'datetime': return pick(['19700101T00:00:00Z', '20301231T23:59:59Z']);
    case 'ref': return chance(0.7) && refsByClass.get(t.cls)?.length ? pick(refsByClass.get(t.cls)!) : pick(['OpaqueRef:NULL', ...refs]);
    case 'set': return depth > 2 ? [] : Array.from({ length: Math.floor(rand() * 3) }, () => wellTyped(t.of, depth + 1));
    case 'map': {
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rand() * 3); i > 0 && depth <= 2; i--) o[String(wellTyped(t.key, depth + 1))] = wellTyped(t.value, depth + 1);
      return o;
    }
    case 'record': {
      const o: Record<string, unknown> = {};
      for (const f of getClass(t.cls)?.fields ?? []) if (chance(0.3) && depth <= 2) o[f.name] = wellTyped(f.type, depth + 1);
      return o;
    }
    case 'void': case 'any': return '';
  }
}

/** A value the declared type refuses on both codecs (XML-RPC sends numbers untyped, as strings). */
function illTyped(t: XType): unknown {
  const structOrArray = chance(0.5) ? { x: ['y'] } : [[1]];
  switch (t.kind) {
    case 'string': return pick([structOrArray, true, 'bad\u0001char', 'lone\ud800']);
    case 'enum': return pick([structOrArray, true, 'no-such-value', '']);
    case 'int': return pick([structOrArray, true, '12abc', '', '1.5', '9223372036854775808', '1e300', 1.5, 2 ** 63]);
    case 'float': return pick([structOrArray, true, 'abc', '', 'NaN', '1e999']);
    case 'bool': return pick([structOrArray, 'maybe', 2]);
    case 'datetime': return pick([structOrArray, true, 'yesterday', '2020-13-45']);
    case 'ref': return pick([structOrArray, true, 'not a ref', 'OpaqueRef:<x>']);
    case 'set': return pick(['a string', { a: 1 }, true, [illTyped(t.of)]]);
    case 'map': return pick([['k', 'v'], 'a string', true]);
    case 'record': return pick(['a string', [1], true]);
    case 'void': case 'any': return structOrArray;
  }
}

let t: TestServer;
let port: number;
let readOnly: XenApiClient;
const refs: string[] = [];
const refsByClass = new Map<string, string[]>();
const roPassword = 'fuzz-ro-pw';

async function loginReadOnly(): Promise<void> {
  readOnly?.close();
  readOnly = new XenApiClient(t.url);
  await readOnly.login('fuzz-ro', roPassword);
}

before(async () => {
  t = await startTestServer({ plugins: [storagePlugin({ gcIntervalMs: 3_600_000 }), xenopsPlugin({ backend: 'sim', metricsIntervalMs: 3_600_000 })] });
  port = portOf(t.url);
  const roles = await t.client.api.role.get_all_records();
  const ro = Object.entries(roles).find(([, r]) => r.name_label === 'read-only')![0];
  const subject = await t.client.api.subject.create({ subject_identifier: 'local:fuzz-ro', other_config: { 'subject-name': 'fuzz-ro' }, roles: [ro] } as never);
  await t.client.call('subject.set_password', [t.client.session, subject, roPassword]);
  await loginReadOnly();
  for (const cls of ['VM', 'host', 'network', 'SR', 'VDI', 'VBD', 'PIF', 'pool', 'role', 'subject', 'host_cpu', 'VM_metrics', 'SM', 'PBD']) {
    const all = ((await t.client.call(`${cls}.get_all`, [t.client.session])) as string[]).slice(0, 4);
    refsByClass.set(cls, all);
    refs.push(...all.slice(0, 2));
  }
});
after(async () => {
  readOnly?.close();
  await t?.close();
});

const VOLATILE_CLASSES = new Set(['session', 'task', 'event']);

/** Every record of every class (but sessions and tasks), read over JSON-RPC as root. */
async function dump(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const methods = (await t.client.call('system.listMethods', [])) as string[];
  for (const m of methods) {
    if (!m.endsWith('.get_all_records') || m.startsWith('Async.')) continue;
    const cls = m.slice(0, -'.get_all_records'.length);
    if (VOLATILE_CLASSES.has(cls)) continue;
    out[cls] = await t.client.call(m, [t.client.session]);
  }
  return out;
}

const NOT_XML_CHARACTER = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/;

interface Reply {
  status: number;
  /** The XenAPI error code, or undefined on success. */
  error?: string;
}

/**
 * XML-RPC as a hostile client writes it: every character outside printable ASCII
 * as a character reference (so controls and lone surrogates arrive as such),
 * numbers typed as <int> or <double>.
 */
function hostileXmlValue(v: unknown): string {
  if (v === null || v === undefined) return '<value><nil/></value>';
  switch (typeof v) {
    case 'string': return `<value>${v.replace(/[&<>]|[^\x20-\x7e]/g, (c) => `&#${c.charCodeAt(0)};`)}</value>`;
    case 'boolean': return `<value><boolean>${v ? 1 : 0}</boolean></value>`;
    case 'number': return Number.isInteger(v) ? `<value><int>${BigInt(v)}</int></value>` : `<value><double>${v}</double></value>`;
    case 'object':
      if (Array.isArray(v)) return `<value><array><data>${v.map(hostileXmlValue).join('')}</data></array></value>`;
      return `<value><struct>${Object.entries(v).map(([k, x]) => `<member><name>${hostileXmlValue(k).slice(7, -8)}</name>${hostileXmlValue(x)}</member>`).join('')}</struct></value>`;
    default: return `<value>${String(v)}</value>`;
  }
}
const hostileXmlCall = (method: string, params: unknown[]): string =>
  `<?xml version="1.0"?><methodCall><methodName>${method}</methodName><params>${params.map((p) => `<param>${hostileXmlValue(p)}</param>`).join('')}</params></methodCall>`;

/** One RPC over a codec; asserts the reply is well-formed. */
async function rpc(codec: 'xml' | 'json', method: string, params: unknown[], label: string, hostile = chance(0.5)): Promise<Reply> {
  // encodeMethodCall writes what XML cannot carry as U+FFFD; the hostile writer sends it as character references
  const body = codec === 'xml' ? (hostile ? hostileXmlCall(method, params) : encodeMethodCall(method, params)) : JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 });
  const head = `POST ${codec === 'xml' ? '/' : '/jsonrpc'} HTTP/1.1\r\nHost: x\r\nContent-Type: ${codec === 'xml' ? 'text/xml' : 'application/json'}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
  const r = await rawRequest(port, head + body, 30_000);
  return checkRpcReply(codec, r.status, r.body, label);
}

function checkRpcReply(codec: 'xml' | 'json', status: number, body: string, label: string): Reply {
  assert.ok(status < 500, `${label}: status ${status} (seed ${SEED})`);
  if (codec === 'xml') {
    assert.doesNotMatch(body, NOT_XML_CHARACTER, `${label}: not XML 1.0 (seed ${SEED})`);
    const v = decodeMethodResponse(body) as { Status?: string; ErrorDescription?: string[] };
    assert.ok(v.Status === 'Success' || v.Status === 'Failure', `${label}: ${body.slice(0, 200)} (seed ${SEED})`);
    return { status, error: v.Status === 'Failure' ? v.ErrorDescription?.[0] : undefined };
  }
  const v = JSON.parse(body) as { result?: unknown; error?: { message?: string } };
  assert.ok('result' in v || v.error, `${label}: ${body.slice(0, 200)} (seed ${SEED})`);
  return { status, error: v.error ? String(v.error.message) : undefined };
}

/** Messages that wait for something: fuzzed only with arguments they refuse. */
const WAITS = new Set(['event.from', 'event.next']);

/** Arguments for a message: `refused` puts one of the wrong type (or one too many) among random or well-typed ones. */
function argsFor(m: ModelMessage, session: string, refused: boolean): unknown[] {
  const typed = chance(0.5);
  const args = m.params.map((p) => (typed ? wellTyped(p.type) : anyValue(0, refs)));
  if (refused && m.params.length > 0) {
    const i = Math.floor(rand() * m.params.length);
    args[i] = illTyped(m.params[i].type);
  } else if (refused) args.push('one too many');
  return m.session ? [session, ...args] : args;
}

test('every message with random arguments: read-only session, root session with a refused argument', { timeout: 240_000 }, async () => {
  const before = await dump();
  const messages = [...MESSAGES.values()];
  let cases = 0;
  const internal: string[] = [];
  const codes = new Map<string, number>();
  for (const m of messages) {
    const wire = m.async && chance(0.2) ? `Async.${m.wireName}` : m.wireName;
    // root: always one argument of the wrong type (or one too many), so the call must be refused
    const codec = chance(0.5) ? 'xml' : 'json';
    const args = argsFor(m, t.client.session, true);
    const asRoot = await rpc(codec, wire, args, `${wire} as root ${JSON.stringify(args).slice(0, 300)}`, true);
    assert.ok(asRoot.error, `${wire} as root with a wrongly typed argument succeeded over ${codec}: ${JSON.stringify(args).slice(0, 300)} (seed ${SEED})`);
    codes.set(asRoot.error, (codes.get(asRoot.error) ?? 0) + 1);
    cases++;
    // read-only: anything, twice (refused calls and reads alike must change nothing)
    for (let i = 0; i < 2; i++) {
      const args = argsFor(m, readOnly.session, WAITS.has(m.wireName) || chance(0.3));
      const r = await rpc(i === 0 ? 'json' : 'xml', wire, args, `${wire} as read-only`);
      if (r.error === 'SESSION_INVALID') await loginReadOnly();
      if (r.error === 'INTERNAL_ERROR') internal.push(`${wire} ${JSON.stringify(args).slice(0, 200)}`);
      cases++;
    }
  }
  assert.ok(cases > 3000, `${cases} cases`);
  // reads with odd but well-typed arguments that fail inside a handler: reported, they are not the edge's
  for (const line of internal) process.stdout.write(`# INTERNAL_ERROR as read-only: ${line}\n`);
  // the edge refuses by type before anything runs: no INTERNAL_ERROR from a wrongly typed call
  assert.equal(codes.get('INTERNAL_ERROR') ?? 0, 0, `INTERNAL_ERROR answers: ${JSON.stringify([...codes])} (seed ${SEED})`);
  assert.deepEqual(await dump(), before, `the database changed (seed ${SEED})`);
});

/** A body with random damage: truncated, bytes flipped, nesting piled on. */
function mangle(body: string): string {
  switch (Math.floor(rand() * 5)) {
    case 0: return body.slice(0, Math.floor(rand() * body.length));
    case 1: {
      const i = Math.floor(rand() * body.length);
      return body.slice(0, i) + pick(['<', '>', '&', '"', '{', '[', '\u0000', '&#0;', '&#xD800;', '<!DOCTYPE x [<!ENTITY e "e">]>', '&e;', ']]>', '\\', '\ud800']) + body.slice(i + 1);
    }
    case 2: {
      const n = 1 + Math.floor(rand() * 5000);
      return body.startsWith('{') ? `{"method":"VM.get_all","params":[${'['.repeat(n)}${']'.repeat(n)}],"id":${'['.repeat(n)}${']'.repeat(n)}}` : body.replace('<param>', `<param>${'<value><array><data>'.repeat(n)}`);
    }
    case 3: return pick(['[]', '[{"method":"VM.get_all"}]', 'null', '1', '""', '<methodResponse/>', '<?xml version="1.0"?>', '']);
    default: return body + pick([' trailing', '}', '</methodCall>', '<x/>']);
  }
}

test('mangled XML-RPC and JSON-RPC bodies get well-formed failures', { timeout: 120_000 }, async () => {
  for (let i = 0; i < 600; i++) {
    const m = pick([...MESSAGES.values()]);
    const codec = chance(0.5) ? 'xml' : 'json';
    const params = argsFor(m, readOnly.session, false);
    const body = mangle(codec === 'xml' ? encodeMethodCall(m.wireName, params) : JSON.stringify({ jsonrpc: '2.0', method: m.wireName, params, id: 1 }));
    const head = `POST ${codec === 'xml' ? '/RPC2' : '/jsonrpc'} HTTP/1.1\r\nHost: x\r\nContent-Type: ${codec === 'xml' ? 'text/xml' : 'application/json'}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
    const r = await rawRequest(port, head + body, 30_000);
    const reply = checkRpcReply(codec, r.status, r.body, `mangled ${codec} ${JSON.stringify(body.slice(0, 80))}`);
    if (reply.error === 'SESSION_INVALID') await loginReadOnly();
  }
});

const PATHS = ['/', '/RPC2', '/xmlrpc', '/jsonrpc', '/import', '/export', '/import_raw_vdi', '/export_raw_vdi', '/console', '/nowhere', '//', '//a:99999/', 'http://[', '*', 'localhost:80', '/\\x'];
const PIECES = ['', '?', '&', '%', '%zz', '%00', '%2e%2e/', '..', 'session_id=', 'ref=', 'vdi=', 'uuid=', 'task_id=', 'format=', 'OpaqueRef:NULL', 'OpaqueRef:bogus', '[', ']', ':', '@', '#', '\\', 'x'.repeat(300), 'http://['];

function randomTarget(): string {
  let target = pick(PATHS);
  for (let i = Math.floor(rand() * 5); i > 0; i--) target += pick(PIECES);
  if (chance(0.2)) target += `session_id=${readOnly.session}`;
  return target;
}

function randomHeaders(bodyLength: number): string {
  const lines = ['Host: x'];
  const options = [
    `Content-Length: ${bodyLength}`, `Content-Length: ${bodyLength}`, 'Content-Length: -1', 'Content-Length: 99999999999999999999', 'Content-Length: 12abc',
    'Transfer-Encoding: chunked', 'Transfer-Encoding: gzip, chunked', 'Expect: 100-continue', 'Cookie: session_id=%zz', `Cookie: session_id=${readOnly.session}`,
    'Content-Type: application/json', 'Content-Type: text/xml', 'Connection: close', 'Connection: keep-alive', `X-Long: ${'y'.repeat(9000)}`,
    'X-Fold: a\r\n b', 'Bad Header: x', 'X-Ctl: a\u0001b', 'Range: bytes=-1', 'Authorization: Basic !!!',
  ];
  for (let i = Math.floor(rand() * 4); i > 0; i--) lines.push(pick(options));
  return lines.join('\r\n');
}

test('hostile targets, methods and headers get a status and a body', { timeout: 180_000 }, async () => {
  let served = 0;
  for (let i = 0; i < 900; i++) {
    const method = pick(['GET', 'GET', 'POST', 'PUT', 'HEAD', 'OPTIONS', 'DELETE', 'CONNECT', 'BREW', 'GET\u0001']);
    const body = chance(0.5) ? '' : pick(['{}', '<x/>', 'garbage', '0\r\n\r\n', 'zz\r\n']);
    const headers = randomHeaders(body.length);
    // a chunked body is always ended (an unended one waits, rightly, for the body deadline)
    const ended = /chunked/.test(headers) ? `${body.length ? `${body.length.toString(16)}\r\n${body}\r\n` : ''}0\r\n\r\n` : body;
    const request = `${method} ${randomTarget()} HTTP/1.${chance(0.9) ? 1 : 0}\r\n${headers}\r\n\r\n${ended}`;
    let r;
    try {
      r = await rawRequest(port, request, 15_000);
    } catch (e) {
      throw new Error(`${JSON.stringify(request.slice(0, 300))}: ${String(e)} (seed ${SEED})`);
    }
    assert.ok(r.status >= 100 && r.status < 600, `${JSON.stringify(request.slice(0, 200))}: status ${r.status} (seed ${SEED})`);
    assert.notEqual(r.status, 500, `${JSON.stringify(request.slice(0, 200))}: 500 ${r.body.slice(0, 200)} (seed ${SEED})`);
    if (r.status >= 400 && method !== 'HEAD') assert.ok(r.body.length > 0, `${JSON.stringify(request.slice(0, 200))}: ${r.status} without a body (seed ${SEED})`);
    served++;
  }
  assert.equal(served, 900);
  // and the daemon still serves a fresh client
  const c = new XenApiClient(t.url);
  await c.login('root', ROOT_PASSWORD);
  c.close();
});
