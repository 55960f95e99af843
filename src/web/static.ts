/**
 * Serves the built web console (web/dist) on GET / of the API ports. Only the
 * files found in the build at start are served, each registered under its
 * own exact path, so no request path can reach outside the build; each is
 * read and gzipped once, on its first request (daemons that nobody browses
 * pay nothing), and held in memory (the build is a few hundred KiB).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type http from 'node:http';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { HttpRoutes } from '../api/http.ts';

/** Where `npm run build:web` puts the console. */
export const DEFAULT_WEB_DIR = fileURLToPath(new URL('../../web/dist/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * The console talks only to its own origin (JSON-RPC, /rrd_updates, the
 * console WebSocket); xterm and uPlot set styles from script, hence 'unsafe-inline' for styles only.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
  "form-action 'none'",
].join('; ');

const SECURITY_HEADERS: http.OutgoingHttpHeaders = {
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
};

interface Asset {
  readonly body: Buffer;
  readonly gzip: Buffer | null;
  readonly type: string;
  readonly etag: string;
  /** Vite names files under assets/ by their content hash: they never change under one name. */
  readonly immutable: boolean;
}

const MAX_FILES = 500;
const MAX_BYTES = 64 * 1024 * 1024;

/** Every regular file under dir (no symlinks followed), as URL paths. */
function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && out.length < MAX_FILES) out.push(p);
    }
  };
  walk(dir);
  return out;
}

function loadAsset(file: string, urlPath: string): Asset {
  const body = readFileSync(file);
  const type = TYPES[extname(file)] ?? 'application/octet-stream';
  const compressible = /^(text\/|application\/json|image\/svg)/.test(type) && body.length > 1024;
  return {
    body,
    gzip: compressible ? gzipSync(body, { level: 9 }) : null,
    type,
    etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
    immutable: urlPath.startsWith('/assets/'),
  };
}

function serve(file: string, urlPath: string) {
  let loaded: Asset | undefined;
  return (req: http.IncomingMessage, res: http.ServerResponse): void => {
    req.resume();
    const asset = (loaded ??= loadAsset(file, urlPath));
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' });
      return void res.end('method not allowed\n');
    }
    const headers: http.OutgoingHttpHeaders = {
      ...SECURITY_HEADERS,
      'Content-Type': asset.type,
      'Cache-Control': asset.immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
      ETag: asset.etag,
      Vary: 'Accept-Encoding',
    };
    if (req.headers['if-none-match'] === asset.etag) {
      res.writeHead(304, headers);
      return void res.end();
    }
    const gzip = asset.gzip && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? '')) ? asset.gzip : null;
    const body = gzip ?? asset.body;
    if (gzip) headers['Content-Encoding'] = 'gzip';
    headers['Content-Length'] = body.length;
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

const NOT_BUILT = `<!doctype html><meta charset="utf-8"><title>Xenon</title>
<p>The web console is not built on this host: run <code>npm run build:web</code> (scripts/setup.sh does), then restart the daemon.
Any XenAPI client and <code>xe</code> work meanwhile.</p>\n`;

/**
 * Registers the console's files as routes; returns whether a build was found.
 * Without one, GET / answers 503 with a page that says how to build it.
 */
export function registerWebConsole(routes: HttpRoutes, dir: string = DEFAULT_WEB_DIR): boolean {
  const index = join(dir, 'index.html');
  if (!existsSync(index) || !statSync(index).isFile()) {
    routes.routes.set('/', (req, res) => {
      req.resume();
      res.writeHead(503, { ...SECURITY_HEADERS, 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache' });
      res.end(NOT_BUILT);
    });
    return false;
  }
  let total = 0;
  for (const file of listFiles(dir)) {
    total += statSync(file).size;
    if (total > MAX_BYTES) throw new Error(`the web console build in ${dir} is larger than ${MAX_BYTES} bytes`);
    const urlPath = `/${relative(dir, file).split(sep).join('/')}`;
    const handler = serve(file, urlPath);
    routes.routes.set(urlPath, handler);
    if (urlPath === '/index.html') routes.routes.set('/', handler);
  }
  return true;
}
