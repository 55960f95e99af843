/**
 * Local accounts: the root account and local subjects, with scrypt-hashed
 * passwords kept in a table of their own (never in any record a client can read).
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import type Database from 'better-sqlite3';

const scrypt = promisify(scryptCb) as (pw: string, salt: Buffer, len: number, opts: { N: number; r: number; p: number; maxmem: number }) => Promise<Buffer>;
const PARAMS = { N: 16384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, 32, PARAMS);
  return `scrypt$${PARAMS.N}$${PARAMS.r}$${PARAMS.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [kind, n, r, p, salt, key] = stored.split('$');
  if (kind !== 'scrypt' || !key) return false;
  const expected = Buffer.from(key, 'base64');
  const got = await scrypt(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(n), r: Number(r), p: Number(p), maxmem: PARAMS.maxmem,
  });
  return got.length === expected.length && timingSafeEqual(got, expected);
}

export const ROOT = 'root';

export class Accounts {
  constructor(private readonly sql: Database.Database) {
    sql.exec('CREATE TABLE IF NOT EXISTS xenon_accounts (name TEXT PRIMARY KEY, hash TEXT NOT NULL)');
  }

  has(name: string): boolean {
    return this.sql.prepare('SELECT 1 FROM xenon_accounts WHERE name = ?').get(name) !== undefined;
  }

  async setPassword(name: string, password: string): Promise<void> {
    const hash = await hashPassword(password);
    this.sql.prepare('INSERT OR REPLACE INTO xenon_accounts (name, hash) VALUES (?, ?)').run(name, hash);
  }

  remove(name: string): void {
    this.sql.prepare('DELETE FROM xenon_accounts WHERE name = ?').run(name);
  }

  /** How long a check took lately: an unknown name waits as long, without the work. */
  private typicalCheckMs = 100;

  async check(name: string, password: string): Promise<boolean> {
    const row = this.sql.prepare('SELECT hash FROM xenon_accounts WHERE name = ?').get(name) as { hash: string } | undefined;
    if (!row) {
      // the same time either way (do not reveal which names exist), but no CPU spent on a name that cannot log in
      await new Promise((r) => setTimeout(r, this.typicalCheckMs));
      return false;
    }
    const started = Date.now();
    const ok = await verifyPassword(password, row.hash);
    this.typicalCheckMs = Math.max(1, Date.now() - started);
    return ok;
  }
}
