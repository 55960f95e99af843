/**
 * What host.software_version says, keyed as XenServer 8 keys it. Clients read
 * it to decide what the host can do: Ansible's xenserver modules parse
 * product_version as major.minor.micro integers (below 7 they take the host
 * for an old XenServer), Xen Orchestra compares product_version and
 * platform_version. So the product and platform versions state the API level
 * Xenon implements — XenServer 8.4's (API 2.21, xapi 24.39) — and Xenon's own
 * version travels under its own key, xenon_version.
 */
import { readFileSync } from 'node:fs';

/** The API version Xenon speaks (host.API_version_major/minor, xencenter_min/max). */
export const API_VERSION = { major: 2, minor: 21 } as const;

/** The XenServer release whose API Xenon implements. */
const PRODUCT_VERSION = '8.4.0';
const PLATFORM_VERSION = '3.4.0';
const XAPI_VERSION = '24.39';

function xenonVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

export const XENON_VERSION = xenonVersion();

export function softwareVersion(hostname: string, hypervisor: string): Record<string, string> {
  const api = `${API_VERSION.major}.${API_VERSION.minor}`;
  return {
    product_brand: 'Xenon',
    product_version: PRODUCT_VERSION,
    product_version_text: PRODUCT_VERSION.split('.')[0]!,
    product_version_text_short: PRODUCT_VERSION.split('.')[0]!,
    platform_name: 'XCP',
    platform_version: PLATFORM_VERSION,
    xapi: XAPI_VERSION,
    xapi_build: `${XAPI_VERSION}.0`,
    hostname,
    xencenter_min: api,
    xencenter_max: api,
    hypervisor,
    xenon_version: XENON_VERSION,
  };
}
