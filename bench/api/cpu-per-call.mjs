// bench/api/cpu-per-call.mjs TREE: the daemon's CPU time (utime+stime from /proc) per VM.get_record over
// JSON-RPC and XML-RPC, 32 keep-alive connections, 20,000 calls a round. Far less sensitive to a loaded
// machine than calls/s: run it on two checkouts back to back to compare them.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
const tree = process.argv[2];
const port = 20000 + Math.floor(Math.random() * 20000);
const dir = mkdtempSync('/tmp/boundary-cpu-');
const p = spawn(process.execPath, [...(process.env.PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.PROF] : []), '--import', 'tsx', `${tree}/src/cli/xenon.ts`, 'server', '--data-dir', dir, '--http', `127.0.0.1:${port}`, '--backend', 'sim', '--network', 'none'], { cwd: tree, env: { ...process.env, XENON_ROOT_PASSWORD: 'pw' }, stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise((r) => p.stdout.on('data', (c) => String(c).includes('listening') && r()));
const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
const post = (path, body, type) => new Promise((res, rej) => {
  const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) } }, (r) => { let s = ''; r.on('data', (c) => (s += c)); r.on('end', () => res(s)); });
  req.on('error', rej); req.end(body);
});
const j = async (method, params) => JSON.parse(await post('/jsonrpc', JSON.stringify({ jsonrpc: '2.0', method, params, id: 1 }), 'application/json')).result;
const s = await j('session.login_with_password', ['root', 'pw']);
const vm = (await j('VM.get_all', [s]))[0];
const cpu = () => { const f = readFileSync(`/proc/${p.pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) * 10; };
const xml = `<?xml version="1.0"?><methodCall><methodName>VM.get_record</methodName><params><param><value>${s}</value></param><param><value>${vm}</value></param></params></methodCall>`;
const json = JSON.stringify({ jsonrpc: '2.0', method: 'VM.get_record', params: [s, vm], id: 1 });
for (const [name, path, body, type] of [['json', '/jsonrpc', json, 'application/json'], ['xml', '/', xml, 'text/xml'], ['json', '/jsonrpc', json, 'application/json'], ['xml', '/', xml, 'text/xml']]) {
  const N = 20000;
  for (let i = 0; i < 2000; i++) await post(path, body, type);
  const c0 = cpu();
  let next = 0;
  await Promise.all(Array.from({ length: 32 }, async () => { while (next++ < N) await post(path, body, type); }));
  console.log(name, ((cpu() - c0) * 1000 / N).toFixed(1), 'µs CPU per call');
}
p.kill('SIGTERM'); await new Promise((r) => p.on('exit', r));
process.exit(0);
