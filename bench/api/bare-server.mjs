/**
 * The baseline for bench/api: a bare Node HTTP server that reads each POST
 * body and answers with a fixed reply — the same bytes Xenon gave for the
 * same request — chosen by path. Plain JavaScript, no loader, same Node.
 *
 * Usage: node bench/api/bare-server.mjs <replies.json>
 *   replies.json: { "/path": { "type": "application/json", "file": "/tmp/…" }, … }
 * Prints "bare: listening on http://127.0.0.1:PORT".
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';

const table = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const replies = new Map(Object.entries(table).map(([p, r]) => [p, { type: r.type, body: readFileSync(r.file, 'utf8') }]));

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const r = replies.get(req.url);
    if (req.method !== 'POST' || !r) {
      res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': 10 });
      res.end('not found\n');
      return;
    }
    res.writeHead(200, { 'Content-Type': r.type, 'Content-Length': Buffer.byteLength(r.body) });
    res.end(r.body);
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`bare: listening on http://127.0.0.1:${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
