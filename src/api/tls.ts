/**
 * HTTPS: the self-signed certificate made on first start, as XenServer does,
 * and only forward-secret suites (TLS 1.3; TLS 1.2 with ECDHE and AEAD ciphers).
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { TlsOptions } from 'node:tls';
import { join } from 'node:path';
import { generate } from 'selfsigned';

export interface TlsMaterial {
  key: string;
  cert: string;
}

/** TLS 1.2 suites with ECDHE key exchange (TLS 1.3's are forward-secret by design and always offered). */
const FORWARD_SECRET_TLS12 = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** Options for the HTTPS server: our certificate, TLS 1.2 at least, forward secrecy only. */
export function serverTlsOptions(material: TlsMaterial): TlsOptions {
  return { ...material, minVersion: 'TLSv1.2', ciphers: FORWARD_SECRET_TLS12, honorCipherOrder: true };
}

export async function ensureCertificate(dataDir: string, hostname: string, addresses: string[]): Promise<TlsMaterial> {
  const keyPath = join(dataDir, 'xenon-key.pem');
  const certPath = join(dataDir, 'xenon-cert.pem');
  if (existsSync(keyPath) && existsSync(certPath)) {
    chmodSync(keyPath, 0o600);
    chmodSync(certPath, 0o600);
    return { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8') };
  }
  const altNames = [
    { type: 2 as const, value: hostname },
    { type: 2 as const, value: 'localhost' },
    ...addresses.filter((a) => /^[\d.:a-f]+$/i.test(a)).map((ip) => ({ type: 7 as const, ip })),
  ];
  const pems = await generate([{ name: 'commonName', value: hostname }], {
    keySize: 2048,
    notAfterDate: new Date(Date.now() + 3650 * 86400_000),
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames }],
  });
  writeFileSync(keyPath, pems.private, { mode: 0o600 });
  writeFileSync(certPath, pems.cert, { mode: 0o600 });
  return { key: pems.private, cert: pems.cert };
}
