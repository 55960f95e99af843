/** The self-signed certificate made on first start, as XenServer does for its HTTPS. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generate } from 'selfsigned';

export interface TlsMaterial {
  key: string;
  cert: string;
}

export async function ensureCertificate(dataDir: string, hostname: string, addresses: string[]): Promise<TlsMaterial> {
  const keyPath = join(dataDir, 'xenon-key.pem');
  const certPath = join(dataDir, 'xenon-cert.pem');
  if (existsSync(keyPath) && existsSync(certPath)) {
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
  writeFileSync(certPath, pems.cert);
  return { key: pems.private, cert: pems.cert };
}
