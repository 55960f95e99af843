/**
 * Typed conversion between wire values and Xenon's values, driven by the
 * datamodel's declared types: checking arguments on the way in, and writing
 * XML-RPC on the way out (ints as strings, floats as doubles, datetimes, refs).
 */
import { XenApiError } from '../datamodel/api-error.ts';
import { enumValues, getClass, type ModelClass } from '../datamodel/model.ts';
import { normalizeDateTime, type XType } from '../datamodel/types.ts';
import { escapeXml, encodeUntyped, XmlDateTime } from './xmlrpc.ts';

/** The wire value is not of the declared type: FIELD_TYPE_ERROR naming the parameter. */
class Mismatch extends Error {}

/** The value has the right type but cannot be accepted: INVALID_VALUE naming the parameter. */
class BadValue extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

const TWO_63 = 2 ** 63;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const INTEGER_TEXT = /^[+-]?\d{1,20}$/;
const FLOAT_TEXT = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

/** An int64 (xapi's `int`): integral and in range, whether it came as a number, a bigint or digits. */
function toInt(v: unknown): number {
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= -TWO_63 && v < TWO_63) return v;
    throw new Mismatch();
  }
  const text = typeof v === 'string' ? v.trim() : undefined;
  const big = typeof v === 'bigint' ? v : text !== undefined && INTEGER_TEXT.test(text) ? BigInt(text) : undefined;
  if (big !== undefined && big >= INT64_MIN && big <= INT64_MAX) return Number(big);
  throw new Mismatch();
}

function toFloat(v: unknown): number {
  const n = typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : typeof v === 'string' && FLOAT_TEXT.test(v.trim()) ? Number(v) : NaN;
  if (Number.isFinite(n)) return n;
  throw new Mismatch();
}

function toBool(v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new Mismatch();
}

/** Characters XML 1.0 cannot carry (controls, U+FFFE/U+FFFF, lone surrogates): refused on both codecs alike. */
const NOT_XML_CHARACTER = /[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]|\p{Cs}/u;

function toText(v: unknown): string {
  if (typeof v !== 'string') throw new Mismatch();
  const bad = NOT_XML_CHARACTER.exec(v);
  if (bad) {
    const code = bad[0].codePointAt(0) ?? 0;
    throw new BadValue(`character U+${code.toString(16).toUpperCase().padStart(4, '0')} at offset ${bad.index} is not allowed`);
  }
  return v;
}

/** xapi's references: `OpaqueRef:` and an identifier (a UUID, or NULL). */
const REF_TEXT = /^OpaqueRef:[A-Za-z0-9._:-]{1,64}$/;

function toRef(v: unknown): string {
  if (typeof v !== 'string') throw new Mismatch();
  if (!REF_TEXT.test(v)) throw new BadReference(v);
  return v;
}

/** A string in a reference's place that is no reference at all: HANDLE_INVALID, as xapi answers. */
class BadReference extends Error {
  constructor(readonly text: string) {
    super(text);
  }
}

/** Converts one wire value to the declared type, or throws Mismatch. */
function convertIn(t: XType, v: unknown): unknown {
  switch (t.kind) {
    case 'string': return toText(v);
    case 'int': return toInt(v);
    case 'float': return toFloat(v);
    case 'bool': return toBool(v);
    case 'datetime': {
      const s = v instanceof XmlDateTime ? v.text : v;
      if (typeof s !== 'string') throw new Mismatch();
      const d = normalizeDateTime(s);
      if (!d) throw new Mismatch();
      return d;
    }
    case 'enum': {
      if (typeof v !== 'string') throw new Mismatch();
      const values = enumValues(t.name) ?? [];
      const hit = values.find((x) => x === v) ?? values.find((x) => x.toLowerCase() === v.toLowerCase());
      if (hit === undefined) throw new BadValue(toText(v));
      return hit;
    }
    case 'ref':
      try {
        return toRef(v);
      } catch (e) {
        if (e instanceof BadReference) throw new XenApiError('HANDLE_INVALID', t.cls, printable(e.text));
        throw e;
      }
    case 'set':
      if (!Array.isArray(v)) throw new Mismatch();
      return v.map((x) => convertIn(t.of, x));
    case 'map': {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Mismatch();
      const out: Record<string, unknown> = {};
      if (v instanceof XmlDateTime) throw new Mismatch();
      for (const [k, x] of Object.entries(v)) out[String(convertIn(t.key, k))] = convertIn(t.value, x);
      return out;
    }
    case 'record': {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Mismatch();
      const cls = getClass(t.cls);
      if (!cls) return v;
      return recordIn(cls, v as Record<string, unknown>);
    }
    case 'void': case 'any': return v;
  }
}

/** Converts a record argument (create's `args`): known fields typed, unknown ones rejected. */
function recordIn(cls: ModelClass, v: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    const f = cls.fieldsByName.get(k);
    if (!f) continue; // xapi ignores fields it does not know in a record argument
    out[k] = unmarshal(f.type, x, k);
  }
  return out;
}

/** Checks and converts an argument; a mismatch is FIELD_TYPE_ERROR naming the parameter. */
export function unmarshal(t: XType, v: unknown, paramName: string): unknown {
  try {
    return convertIn(t, v);
  } catch (e) {
    if (e instanceof Mismatch) throw new XenApiError('FIELD_TYPE_ERROR', paramName);
    if (e instanceof BadValue) throw new XenApiError('INVALID_VALUE', paramName, e.reason);
    throw e;
  }
}

/** A refused value as it may travel back in an error: only XML-safe characters, and not too long. */
function printable(text: string): string {
  const safe = text.replace(new RegExp(NOT_XML_CHARACTER.source, 'gu'), '\uFFFD');
  return safe.length > 100 ? `${safe.slice(0, 100)}…` : safe;
}

// ---------------------------------------------------------------- XML-RPC out

type XmlWriter = (v: unknown) => string;
const writers = new WeakMap<XType, XmlWriter>();
const recordWriters = new Map<string, XmlWriter>();

const str: XmlWriter = (v) => `<value>${escapeXml(v === null || v === undefined ? '' : String(v))}</value>`;
const int: XmlWriter = (v) => `<value>${int64Text(v)}</value>`;
const dbl: XmlWriter = (v) => `<value><double>${Number.isFinite(v) ? v : 0}</double></value>`;
const bool: XmlWriter = (v) => (v ? '<value><boolean>1</boolean></value>' : '<value><boolean>0</boolean></value>');
const date: XmlWriter = (v) => `<value><dateTime.iso8601>${escapeXml(String(v))}</dateTime.iso8601></value>`;

/** An int as xapi writes it: in int64 range whatever was stored (2^63 - 1 rounds to 2^63 as a double). */
function int64Text(v: unknown): string {
  const n = typeof v === 'number' ? v : Number(v ?? 0);
  if (!Number.isFinite(n)) return '0';
  if (n >= TWO_63) return '9223372036854775807';
  if (n < -TWO_63) return '-9223372036854775808';
  return String(Math.trunc(n));
}

/** An XML-RPC writer for values of this type, built once per type. */
export function xmlWriter(t: XType): XmlWriter {
  let w = writers.get(t);
  if (w) return w;
  w = buildWriter(t);
  writers.set(t, w);
  return w;
}

function buildWriter(t: XType): XmlWriter {
  switch (t.kind) {
    case 'string': case 'enum': case 'ref': return str;
    case 'int': return int;
    case 'float': return dbl;
    case 'bool': return bool;
    case 'datetime': return date;
    case 'void': return () => '<value></value>';
    case 'any': return encodeUntyped;
    case 'set': {
      const of = xmlWriter(t.of);
      return (v) => {
        const a = v as unknown[];
        let s = '<value><array><data>';
        for (let i = 0; i < a.length; i++) s += of(a[i]);
        return `${s}</data></array></value>`;
      };
    }
    case 'map': {
      const val = xmlWriter(t.value);
      return (v) => {
        let s = '<value><struct>';
        for (const k in v as Record<string, unknown>) {
          s += `<member><name>${escapeXml(k)}</name>${val((v as Record<string, unknown>)[k])}</member>`;
        }
        return `${s}</struct></value>`;
      };
    }
    case 'record': return recordWriter(t.cls);
  }
}

function recordWriter(clsName: string): XmlWriter {
  const hit = recordWriters.get(clsName);
  if (hit) return hit;
  const cls = getClass(clsName);
  if (!cls) return encodeUntyped;
  const parts = cls.fields.map((f) => ({ open: `<member><name>${escapeXml(f.name)}</name>`, name: f.name, w: xmlWriter(f.type) }));
  // joined rather than concatenated: one flat string, cheap to keep and to copy out
  const write: XmlWriter = (v) => {
    const r = v as Record<string, unknown>;
    const out: string[] = new Array(parts.length + 2);
    out[0] = '<value><struct>';
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      out[i + 1] = `${p.open}${p.w(r[p.name])}</member>`;
    }
    out[parts.length + 1] = '</struct></value>';
    return out.join('');
  };
  // Database records are frozen and replaced (never edited) on change, so a
  // record object's encoding never changes: remember it while the record lives.
  const cache = new WeakMap<object, string>();
  const w: XmlWriter = (v) => {
    if (!isFrozenObject(v)) return write(v);
    let s = cache.get(v);
    if (s === undefined) {
      s = write(v);
      cache.set(v, s);
    }
    return s;
  };
  recordWriters.set(clsName, w);
  return w;
}

const isFrozenObject = (v: unknown): v is object => typeof v === 'object' && v !== null && Object.isFrozen(v);

// ---------------------------------------------------------------- JSON-RPC out

const jsonCache = new WeakMap<object, string>();
const hasToJson = (v: object): boolean => typeof (v as { toJSON?: unknown }).toJSON === 'function';

/** JSON text of a record; frozen (database) records' texts are remembered, as for XML. */
function recordJson(v: unknown): string | undefined {
  if (!isFrozenObject(v)) return JSON.stringify(v);
  let s = jsonCache.get(v);
  if (s === undefined) {
    s = JSON.stringify(v);
    jsonCache.set(v, s);
  }
  return s;
}

/**
 * The JSON text of a result of a declared type, exactly as `JSON.stringify`
 * would write it inside the reply — faster for records and maps of records
 * (get_record, get_all_records). Undefined when the value has no JSON form,
 * or when it is not a plain value this shortcut can vouch for (the caller
 * then stringifies the whole reply).
 */
export function toJsonText(t: XType, v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || hasToJson(v)) return undefined;
  if (t.kind === 'record') return recordJson(v);
  if (t.kind !== 'map' || t.value.kind !== 'record') return undefined;
  const m = v as Record<string, unknown>;
  const keys = Object.keys(m);
  let s = '{';
  for (let i = 0; i < keys.length; i++) {
    const x = m[keys[i]];
    if (typeof x !== 'object' || x === null || hasToJson(x)) return undefined;
    s += `${i === 0 ? '' : ','}${JSON.stringify(keys[i])}:${recordJson(x)}`;
  }
  return `${s}}`;
}

/** Encodes a value of a declared type as an XML-RPC `<value>`. */
export const toXml = (t: XType, v: unknown): string => xmlWriter(t)(v);

/** A value carried with its declared type, for places typed only at run time (event snapshots). */
export class TypedValue {
  constructor(
    readonly type: XType,
    readonly value: unknown,
  ) {}
  toXmlRpc(): string {
    return toXml(this.type, this.value);
  }
  toJSON(): unknown {
    return this.value;
  }
}
