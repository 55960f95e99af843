/**
 * The pool's certificate bundle: every host's TLS certificate, by host uuid.
 * The master keeps the members' in `<data-dir>/pool-certs/` (pinned at join)
 * and hands the whole bundle, its own included, to members with replication,
 * as xapi distributes its pool certificate bundle: so whichever host becomes
 * master, every other host can pin it, and it can pin them.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PRIVATE_DIR, PRIVATE_FILE } from '../auth/private-files.ts';

export type CertBundle = Readonly<Record<string, string>>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PEM = /^-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]{100,16384}-----END CERTIFICATE-----(\r?\n)?$/;
/** A pool has at most this many hosts' certificates in a bundle (xapi's pools stop at 64 hosts). */
const MAX_HOSTS = 256;

export const certificateDir = (dataDir: string): string => join(dataDir, 'pool-certs');
const ownCertificate = (dataDir: string): string => join(dataDir, 'xenon-cert.pem');

/** This host's own certificate (the HTTPS listener's). */
export function ownCertificatePem(dataDir: string): string {
  return readFileSync(ownCertificate(dataDir), 'utf8');
}

/** The bundle as this host knows it: the other hosts' certificates and, under `self`, its own. */
export function readBundle(dataDir: string, self: string): CertBundle {
  const bundle: Record<string, string> = {};
  let names: string[] = [];
  try {
    names = readdirSync(certificateDir(dataDir));
  } catch {
    // no other hosts yet
  }
  for (const name of names) {
    const uuid = name.replace(/\.pem$/, '');
    if (UUID.test(uuid) && uuid !== self) bundle[uuid] = readFileSync(join(certificateDir(dataDir), name), 'utf8');
  }
  try {
    bundle[self] = ownCertificatePem(dataDir);
  } catch {
    // a daemon without HTTPS has no certificate to share
  }
  return bundle;
}

/** A short digest of a bundle, so a member asks for it only when it changed. */
export function bundleDigest(bundle: CertBundle): string {
  const h = createHash('sha256');
  for (const uuid of Object.keys(bundle).sort()) h.update(`${uuid}\n${bundle[uuid]}\n`);
  return h.digest('hex');
}

/** Checks a bundle that came over the channel (authenticated, but still input). */
export function checkBundle(v: unknown): CertBundle {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('malformed certificate bundle');
  const entries = Object.entries(v);
  if (entries.length > MAX_HOSTS) throw new Error('certificate bundle too large');
  for (const [uuid, pem] of entries) {
    if (!UUID.test(uuid) || typeof pem !== 'string' || !PEM.test(pem)) throw new Error(`malformed certificate of host ${uuid.slice(0, 40)}`);
  }
  return Object.fromEntries(entries) as CertBundle;
}

/** Replaces the other hosts' certificates by the bundle's (this host's own stays its listener's). */
export function saveBundle(dataDir: string, self: string, bundle: CertBundle): void {
  const dir = certificateDir(dataDir);
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR });
  for (const [uuid, pem] of Object.entries(bundle)) if (uuid !== self) writeFileSync(join(dir, `${uuid}.pem`), pem, { mode: PRIVATE_FILE });
  for (const name of readdirSync(dir)) {
    const uuid = name.replace(/\.pem$/, '');
    if (!(uuid in bundle) || uuid === self) rmSync(join(dir, name), { force: true });
  }
}

/** The certificate of host `uuid` as this host knows it (its own included), or undefined. */
export function certificateOf(dataDir: string, self: string, uuid: string): string | undefined {
  if (!UUID.test(uuid)) return undefined;
  try {
    return readFileSync(uuid === self ? ownCertificate(dataDir) : join(certificateDir(dataDir), `${uuid}.pem`), 'utf8');
  } catch {
    return undefined;
  }
}
