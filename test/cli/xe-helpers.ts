/** Runs the real `bin/xe.mjs` as a child process. */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ROOT_PASSWORD } from '../helpers/server.ts';

export const XE_BIN = fileURLToPath(new URL('../../bin/xe.mjs', import.meta.url));

export interface XeResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface XeOptions {
  env?: NodeJS.ProcessEnv;
  home?: string;
  input?: string;
}

/** A fresh HOME so that no real ~/.xe or ~/.xe-known-hosts is read. */
export function tempHome(): string {
  return mkdtempSync(join(tmpdir(), 'xe-home-'));
}

const defaultHome = tempHome();

export function runXe(args: readonly string[], o: XeOptions = {}): Promise<XeResult> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [XE_BIN, ...args], { env: { PATH: process.env.PATH, HOME: o.home ?? defaultHome, ...o.env }, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (o.input !== undefined) child.stdin?.end(o.input);
    else child.stdin?.end();
  });
}

/** `xe` against a plain-HTTP test server as root. */
export function connArgs(url: string): string[] {
  const u = new URL(url);
  return ['-s', u.hostname, '-p', u.port, '--nossl', '-u', 'root', '-pw', ROOT_PASSWORD];
}

/** Starts xe without waiting: for event-wait. */
export function spawnXe(args: readonly string[], o: XeOptions = {}): { done: Promise<XeResult> } {
  const child = spawn(process.execPath, [XE_BIN, ...args], { env: { PATH: process.env.PATH, HOME: o.home ?? defaultHome, ...o.env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  child.stdin.end();
  return { done: new Promise((resolve) => child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }))) };
}
