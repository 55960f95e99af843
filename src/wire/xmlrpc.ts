/**
 * XML-RPC, hand-written: it is the hottest path of the API and only a small,
 * fixed subset of XML is ever spoken (see docs/design.md for why no library).
 * Decoding yields plain JS values; typed encoding of results lives in marshal.ts,
 * which uses the escaping and value writers here.
 */

export class XmlRpcParseError extends Error {}

export interface MethodCall {
  method: string;
  params: unknown[];
}

/** A decoded `<dateTime.iso8601>`: kept apart from strings so typed unmarshalling can tell. */
export class XmlDateTime {
  constructor(readonly text: string) {}
}

const ENTITY: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

export function unescapeXml(s: string): string {
  if (s.indexOf('&') < 0) return s;
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (m, e: string) => {
    if (e[0] === '#') {
      const code = e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
      return Number.isFinite(code) && code <= 0x10ffff ? String.fromCodePoint(code) : m;
    }
    const v = ENTITY[e];
    if (v === undefined) throw new XmlRpcParseError(`unknown entity &${e};`);
    return v;
  });
}

// Markup, and what XML 1.0 cannot carry at all (control characters, U+FFFE/U+FFFF):
// values are checked at the edge, but whatever is already stored must still make a
// well-formed reply, so those become U+FFFD. CR travels as a reference, which parsers keep.
const ESCAPE_TEST = /[<>&\r\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]/;
const ESCAPE_ALL = /[<>&\r\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]/g;
const ESCAPED: Record<string, string> = { '<': '&lt;', '>': '&gt;', '&': '&amp;', '\r': '&#13;' };

export function escapeXml(s: string): string {
  if (!ESCAPE_TEST.test(s)) return s;
  return s.replace(ESCAPE_ALL, (c) => ESCAPED[c] ?? '\uFFFD');
}

/** A cursor over the document, skipping whitespace, comments and prologs between tags. */
class Reader {
  pos = 0;
  constructor(readonly s: string) {}

  skipMisc(): void {
    const s = this.s;
    for (;;) {
      while (this.pos < s.length && (s.charCodeAt(this.pos) <= 32)) this.pos++;
      if (s.startsWith('<?', this.pos)) this.skipTo('?>');
      else if (s.startsWith('<!--', this.pos)) this.skipTo('-->');
      else return;
    }
  }

  private skipTo(end: string): void {
    const i = this.s.indexOf(end, this.pos);
    if (i < 0) throw new XmlRpcParseError(`unterminated ${end}`);
    this.pos = i + end.length;
  }

  /** Reads `<name>` or `<name/>`; returns the tag name and whether it was self-closing. */
  openTag(): { name: string; empty: boolean } {
    this.skipMisc();
    const s = this.s;
    if (s.charCodeAt(this.pos) !== 60 /* < */ || s.charCodeAt(this.pos + 1) === 47 /* / */) {
      throw new XmlRpcParseError(`expected a tag at ${this.pos}`);
    }
    const close = s.indexOf('>', this.pos);
    if (close < 0) throw new XmlRpcParseError('unterminated tag');
    let inner = s.slice(this.pos + 1, close);
    this.pos = close + 1;
    const empty = inner.endsWith('/');
    if (empty) inner = inner.slice(0, -1);
    const sp = inner.search(/\s/);
    return { name: sp < 0 ? inner : inner.slice(0, sp), empty };
  }

  expectOpen(name: string): boolean {
    const t = this.openTag();
    if (t.name !== name) throw new XmlRpcParseError(`expected <${name}>, found <${t.name}>`);
    return t.empty;
  }

  expectClose(name: string): void {
    this.skipMisc();
    const tag = `</${name}`;
    if (!this.s.startsWith(tag, this.pos)) throw new XmlRpcParseError(`expected </${name}> at ${this.pos}`);
    const close = this.s.indexOf('>', this.pos);
    if (close < 0) throw new XmlRpcParseError('unterminated closing tag');
    this.pos = close + 1;
  }

  peekClose(): boolean {
    this.skipMisc();
    return this.s.startsWith('</', this.pos);
  }

  /** Text up to the next tag (entities decoded; CDATA sections kept verbatim). */
  text(): string {
    const s = this.s;
    let out = '';
    for (;;) {
      const lt = s.indexOf('<', this.pos);
      if (lt < 0) throw new XmlRpcParseError('unexpected end of document');
      out += unescapeXml(s.slice(this.pos, lt));
      this.pos = lt;
      if (!s.startsWith('<![CDATA[', lt)) return out;
      const end = s.indexOf(']]>', lt);
      if (end < 0) throw new XmlRpcParseError('unterminated CDATA');
      out += s.slice(lt + 9, end);
      this.pos = end + 3;
    }
  }
}

function parseScalar(type: string, text: string): unknown {
  switch (type) {
    case 'string': return text;
    case 'int': case 'i4': case 'i8': {
      const t = text.trim();
      if (!/^[+-]?\d+$/.test(t)) throw new XmlRpcParseError(`bad integer '${t.slice(0, 40)}'`);
      const n = Number(t);
      // beyond 2^53 a double is not exact: the typed edge checks the int64 range on the digits
      return Number.isSafeInteger(n) || t.length > 40 ? n : BigInt(t);
    }
    case 'boolean': {
      const t = text.trim();
      if (t === '1' || t === 'true') return true;
      if (t === '0' || t === 'false') return false;
      throw new XmlRpcParseError(`bad boolean '${t}'`);
    }
    case 'double': {
      const n = Number(text.trim());
      if (text.trim() === '' || Number.isNaN(n)) throw new XmlRpcParseError(`bad double '${text}'`);
      return n;
    }
    case 'dateTime.iso8601': return new XmlDateTime(text.trim());
    case 'base64': return Buffer.from(text.replace(/\s+/g, ''), 'base64').toString('utf8');
    default: throw new XmlRpcParseError(`unknown type <${type}>`);
  }
}

function parseValue(r: Reader, depth: number): unknown {
  if (depth > 64) throw new XmlRpcParseError('nesting too deep');
  if (r.expectOpen('value')) return '';
  // an untyped value is a string
  const s = r.s;
  let i = r.pos;
  while (i < s.length && s.charCodeAt(i) <= 32) i++;
  if (s.startsWith('</value', i) || (s.charCodeAt(i) !== 60 && i < s.length) || s.startsWith('<![CDATA[', i)) {
    const text = r.text();
    r.expectClose('value');
    return text;
  }
  const { name, empty } = r.openTag();
  let v: unknown;
  if (name === 'struct') v = empty ? {} : parseStruct(r, depth);
  else if (name === 'array') v = empty ? [] : parseArray(r, depth);
  else if (name === 'nil') {
    v = null;
    if (!empty) r.expectClose('nil');
  } else if (empty) v = parseScalar(name, '');
  else {
    v = parseScalar(name, r.text());
    r.expectClose(name);
  }
  r.expectClose('value');
  return v;
}

function parseStruct(r: Reader, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = Object.create(null);
  while (!r.peekClose()) {
    r.expectOpen('member');
    r.expectOpen('name');
    const key = r.text();
    r.expectClose('name');
    out[key] = parseValue(r, depth + 1);
    r.expectClose('member');
  }
  r.expectClose('struct');
  return { ...out };
}

function parseArray(r: Reader, depth: number): unknown[] {
  const out: unknown[] = [];
  if (r.expectOpen('data')) {
    r.expectClose('array');
    return out;
  }
  while (!r.peekClose()) out.push(parseValue(r, depth + 1));
  r.expectClose('data');
  r.expectClose('array');
  return out;
}

export function decodeMethodCall(body: string): MethodCall {
  const r = new Reader(body);
  r.expectOpen('methodCall');
  r.expectOpen('methodName');
  const method = r.text().trim();
  r.expectClose('methodName');
  const params: unknown[] = [];
  r.skipMisc();
  if (!r.peekClose()) {
    if (!r.expectOpen('params')) {
      while (!r.peekClose()) {
        r.expectOpen('param');
        params.push(parseValue(r, 0));
        r.expectClose('param');
      }
      r.expectClose('params');
    }
  }
  r.expectClose('methodCall');
  r.skipMisc();
  if (r.pos < body.length) throw new XmlRpcParseError('trailing content after </methodCall>');
  return { method, params };
}

/** Decodes a `<methodResponse>` (used by the client side and the tests). */
export function decodeMethodResponse(body: string): unknown {
  const r = new Reader(body);
  r.expectOpen('methodResponse');
  const { name } = r.openTag();
  let v: unknown;
  if (name === 'params') {
    r.expectOpen('param');
    v = parseValue(r, 0);
    r.expectClose('param');
    r.expectClose('params');
  } else if (name === 'fault') {
    v = { fault: parseValue(r, 0) };
    r.expectClose('fault');
  } else throw new XmlRpcParseError(`unexpected <${name}> in methodResponse`);
  r.expectClose('methodResponse');
  return v;
}

/** Decodes a lone `<value>…</value>` (task results carry one). */
export function decodeValue(xml: string): unknown {
  return parseValue(new Reader(xml), 0);
}

/** A value that knows its own XML-RPC form (e.g. an event's typed snapshot). */
export interface XmlSelfEncoding {
  toXmlRpc(): string;
}

const selfEncoding = (v: object): v is XmlSelfEncoding => typeof (v as Partial<XmlSelfEncoding>).toXmlRpc === 'function';

/** Untyped encoding of plain JS values — for places with no declared type. */
export function encodeUntyped(v: unknown): string {
  if (v === null || v === undefined) return '<value></value>';
  if (typeof v === 'object' && selfEncoding(v)) return v.toXmlRpc();
  switch (typeof v) {
    case 'string': return `<value>${escapeXml(v)}</value>`;
    case 'boolean': return `<value><boolean>${v ? 1 : 0}</boolean></value>`;
    case 'number':
      if (!Number.isFinite(v)) return `<value>${v}</value>`;
      return Number.isInteger(v) ? `<value>${v}</value>` : `<value><double>${v}</double></value>`;
    case 'object': {
      if (Array.isArray(v)) return `<value><array><data>${v.map(encodeUntyped).join('')}</data></array></value>`;
      let s = '<value><struct>';
      for (const [k, x] of Object.entries(v)) s += `<member><name>${escapeXml(k)}</name>${encodeUntyped(x)}</member>`;
      return `${s}</struct></value>`;
    }
    default: return `<value>${escapeXml(String(v))}</value>`;
  }
}

export function encodeMethodCall(method: string, params: readonly unknown[]): string {
  return `<?xml version="1.0"?><methodCall><methodName>${escapeXml(method)}</methodName><params>${params
    .map((p) => `<param>${encodeUntyped(p)}</param>`)
    .join('')}</params></methodCall>`;
}

export const wrapResponse = (valueXml: string): string =>
  `<?xml version="1.0"?><methodResponse><params><param>${valueXml}</param></params></methodResponse>`;

export function successXml(valueXml: string): string {
  return wrapResponse(`<value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name>${valueXml}</member></struct></value>`);
}

export function failureXml(description: readonly string[]): string {
  return wrapResponse(
    `<value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name>${encodeUntyped(description)}</member></struct></value>`,
  );
}
