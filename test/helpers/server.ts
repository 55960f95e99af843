/** Test fixtures: an in-process daemon on a throw-away data dir, and raw wire helpers. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { XenApiClient } from '../../src/client/client.ts';
import { startServer, type Plugin, type RunningServer, type ServerConfig } from '../../src/server.ts';

export const ROOT_PASSWORD = 'xenon-test-root';

export interface TestServer {
  server: RunningServer;
  url: string;
  dataDir: string;
  client: XenApiClient;
  close(): Promise<void>;
}

export async function startTestServer(opts: { plugins?: Plugin[]; config?: Partial<ServerConfig>; dataDir?: string } = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'xenon-test-'));
  const server = await startServer(
    {
      dataDir,
      http: { host: '127.0.0.1', port: 0 },
      rootPassword: ROOT_PASSWORD,
      logger: pino({ level: process.env.XENON_TEST_LOG ?? 'silent' }),
      synchronous: 'NORMAL',
      ...opts.config,
    },
    opts.plugins ?? [],
  );
  const url = server.httpUrl!;
  const client = new XenApiClient(url);
  await client.login('root', ROOT_PASSWORD);
  return {
    server, url, dataDir, client,
    async close() {
      client.close();
      await server.close();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface RawReply {
  status: number;
  headers: Headers;
  text: string;
}

export async function post(url: string, path: string, body: string, contentType: string): Promise<RawReply> {
  const res = await fetch(url + path, { method: 'POST', body, headers: { 'Content-Type': contentType } });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** A JSON-RPC 2.0 call that returns the whole reply object. */
export async function jsonRpc(url: string, method: string, params: unknown[], extra: Record<string, unknown> = { jsonrpc: '2.0' }): Promise<Record<string, unknown>> {
  const r = await post(url, '/jsonrpc', JSON.stringify({ ...extra, method, params, id: 7 }), 'application/json');
  return JSON.parse(r.text) as Record<string, unknown>;
}

/** Expects a XenAPI failure with this code from a client call; returns its params. */
export async function failsWith(p: Promise<unknown>, code: string): Promise<readonly string[]> {
  try {
    await p;
  } catch (e) {
    const err = e as { code?: string; params?: readonly string[] };
    if (err.code === code) return err.params ?? [];
    throw new Error(`expected ${code}, got ${err.code ?? ''} ${String(e)}`);
  }
  throw new Error(`expected ${code}, but the call succeeded`);
}
