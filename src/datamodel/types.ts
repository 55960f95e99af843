/** XenAPI types, parsed from xapi's type syntax (`VM ref set`, `(string -> int) map`, …). */
export type XType =
  | { readonly kind: 'string' | 'int' | 'float' | 'bool' | 'datetime' | 'void' }
  /** A value whose shape depends on the call (an event batch, an event's snapshot). */
  | { readonly kind: 'any' }
  | { readonly kind: 'enum'; readonly name: string }
  | { readonly kind: 'ref'; readonly cls: string }
  | { readonly kind: 'record'; readonly cls: string }
  | { readonly kind: 'set'; readonly of: XType }
  | { readonly kind: 'map'; readonly key: XType; readonly value: XType };

const PRIMITIVES = new Set(['string', 'int', 'float', 'bool', 'datetime', 'void']);
const cache = new Map<string, XType>();

export function parseType(text: string): XType {
  const hit = cache.get(text);
  if (hit) return hit;
  const t = parseUncached(text.trim());
  cache.set(text, t);
  return t;
}

function parseUncached(s: string): XType {
  if (PRIMITIVES.has(s)) return { kind: s as 'string' };
  if (s === 'an event batch' || s === '<class> record') return { kind: 'any' };
  if (s.endsWith(' set')) return { kind: 'set', of: parseType(s.slice(0, -4)) };
  if (s.endsWith(' map')) {
    const inner = s.slice(0, -4).trim();
    if (!inner.startsWith('(') || !inner.endsWith(')')) throw new Error(`bad map type: ${s}`);
    const body = inner.slice(1, -1);
    const arrow = topLevelArrow(body);
    return { kind: 'map', key: parseType(body.slice(0, arrow)), value: parseType(body.slice(arrow + 4)) };
  }
  if (s.endsWith(' ref')) return { kind: 'ref', cls: s.slice(0, -4) };
  if (s.endsWith(' record')) return { kind: 'record', cls: s.slice(0, -7) };
  if (s.startsWith('enum ')) return { kind: 'enum', name: s.slice(5) };
  if (s.startsWith('(') && s.endsWith(')')) return parseType(s.slice(1, -1));
  throw new Error(`unknown type: ${s}`);
}

function topLevelArrow(body: string): number {
  let depth = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (depth === 0 && body.startsWith(' -> ', i)) return i;
  }
  throw new Error(`map type without '->': ${body}`);
}

export const NULL_REF = 'OpaqueRef:NULL';
export const EPOCH = '19700101T00:00:00Z';

/** The value a field of this type holds when nothing else was said. */
export function zeroValue(t: XType, enumFirst: (name: string) => string): unknown {
  switch (t.kind) {
    case 'string': return '';
    case 'int': case 'float': return 0;
    case 'bool': return false;
    case 'datetime': return EPOCH;
    case 'enum': return enumFirst(t.name);
    case 'ref': return NULL_REF;
    case 'set': return [];
    case 'map': return {};
    case 'record': return {};
    case 'void': case 'any': return null;
  }
}

/** A date as xapi writes it: `20240131T12:34:56Z`. */
export function formatDateTime(d: Date): string {
  return d.toISOString().replace(/-/g, '').replace(/\.\d+Z$/, 'Z');
}

/** Accepts xapi's form and the usual ISO 8601 variants; returns xapi's form or undefined. */
export function normalizeDateTime(s: string): string | undefined {
  const compact = /^(\d{4})(\d{2})(\d{2})T(\d{2}):?(\d{2}):?(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?$/.exec(s);
  const iso = compact ? null : new Date(s);
  if (compact) {
    const [, y, mo, d, h, mi, se, tz] = compact;
    const date = new Date(`${y}-${mo}-${d}T${h}:${mi}:${se}${tz && tz !== 'Z' ? tz : 'Z'}`);
    return Number.isNaN(date.getTime()) ? undefined : formatDateTime(date);
  }
  return iso && !Number.isNaN(iso.getTime()) ? formatDateTime(iso) : undefined;
}
