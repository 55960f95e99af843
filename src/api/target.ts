/**
 * The request target, parsed once and safely for every request and CONNECT:
 * only origin-form (`/path?query`) is served. Anything else — absolute or
 * authority form, `//host` tricks, bytes outside visible ASCII, broken
 * percent-escapes — is refused with a reason rather than thrown.
 */

const BASE = 'http://localhost';

/** A target the daemon serves, or why it is refused (for a 400). */
export type ParsedTarget = { readonly ok: true; readonly url: URL } | { readonly ok: false; readonly reason: string };

// visible ASCII only, with every '%' starting a two-digit hex escape
const WELL_FORMED = /^(?:[\x21-\x24\x26-\x7e]|%[0-9A-Fa-f]{2})*$/;

export function parseTarget(raw: string | undefined): ParsedTarget {
  if (!raw || raw.charCodeAt(0) !== 0x2f /* / */) return { ok: false, reason: 'the request target must start with /' };
  if (raw.charCodeAt(1) === 0x2f || raw.charCodeAt(1) === 0x5c /* \ */) return { ok: false, reason: 'the request target must not start with //' };
  if (!WELL_FORMED.test(raw)) return { ok: false, reason: 'the request target holds a byte or percent-escape that is not allowed' };
  let url: URL;
  try {
    url = new URL(raw, BASE);
  } catch {
    return { ok: false, reason: 'the request target is not a valid path' };
  }
  // `/\host` and the like are re-rooted by the URL parser: the origin must be ours still
  if (url.origin !== BASE) return { ok: false, reason: 'the request target names another host' };
  return { ok: true, url };
}
