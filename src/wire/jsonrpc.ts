/**
 * JSON-RPC, as xapi speaks it: version 1.0 (`{result, error, id}`, the error
 * being the XenAPI description list) and 2.0 (`{jsonrpc, result | error, id}`).
 */
import { XenApiError } from '../datamodel/api-error.ts';
import type { XType } from '../datamodel/types.ts';
import { toJsonText } from './marshal.ts';

/** What a call came to, as the codecs need it. */
export type WireOutcome =
  | { readonly ok: true; readonly type: XType; readonly value: unknown }
  | { readonly ok: false; readonly error: XenApiError };

export type JsonRpcVersion = '1.0' | '2.0';

export interface JsonRpcRequest {
  readonly version: JsonRpcVersion;
  readonly id: unknown;
  readonly method: unknown;
  readonly params: unknown;
}

/** JSON-RPC 2.0 error codes. */
export const JSON_PARSE_ERROR = -32700;
export const JSON_INVALID_REQUEST = -32600;

export class JsonRpcDecodeError extends Error {
  constructor(
    readonly rpcCode: number,
    readonly error: XenApiError,
  ) {
    super(error.code);
  }
}

/** No XenAPI value nests deeper than a few levels; this bounds the work on hostile input. */
const MAX_DEPTH = 64;

/** Whether brackets outside strings nest deeper than `limit` (checked before parsing). */
function nestedTooDeep(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > limit) return true;
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) depth--;
  }
  return false;
}

/** The request object of a JSON-RPC body; its method and params are checked by the caller. */
export function decodeJsonRequest(body: string): JsonRpcRequest {
  if (nestedTooDeep(body, MAX_DEPTH)) {
    throw new JsonRpcDecodeError(JSON_INVALID_REQUEST, new XenApiError('INTERNAL_ERROR', `JSON nested deeper than ${MAX_DEPTH} levels`));
  }
  let msg: unknown;
  try {
    msg = JSON.parse(body);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new JsonRpcDecodeError(JSON_PARSE_ERROR, new XenApiError('INTERNAL_ERROR', `JSON parse error: ${reason}`));
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    throw new JsonRpcDecodeError(JSON_INVALID_REQUEST, new XenApiError('INTERNAL_ERROR', 'a JSON-RPC request must be an object'));
  }
  const fields = msg as Record<string, unknown>;
  const id = fields.id ?? null;
  // an id is echoed back: only the scalar kinds JSON-RPC allows
  if (id !== null && typeof id !== 'string' && typeof id !== 'number') {
    throw new JsonRpcDecodeError(JSON_INVALID_REQUEST, new XenApiError('INTERNAL_ERROR', 'a JSON-RPC id must be a string, a number or null'));
  }
  return {
    version: fields.jsonrpc === '2.0' ? '2.0' : '1.0',
    id,
    method: fields.method,
    params: fields.params ?? [],
  };
}

/** A JSON-RPC error reply for a request that never reached dispatch. */
export function jsonErrorReply(error: XenApiError, rpcCode: number, id: unknown = null): string {
  return JSON.stringify({ jsonrpc: '2.0', error: { code: rpcCode, message: error.code, data: error.params }, id });
}

export function jsonReply(version: JsonRpcVersion, id: unknown, out: WireOutcome): string {
  // records and maps of records: spliced from their (cached) JSON, byte for byte as below
  const result = out.ok ? toJsonText(out.type, out.value) : undefined;
  if (result !== undefined) {
    const idText = JSON.stringify(id);
    if (idText !== undefined) {
      return version === '2.0' ? `{"jsonrpc":"2.0","result":${result},"id":${idText}}` : `{"result":${result},"error":null,"id":${idText}}`;
    }
  }
  if (version === '2.0') {
    return out.ok
      ? JSON.stringify({ jsonrpc: '2.0', result: out.value, id })
      : JSON.stringify({ jsonrpc: '2.0', error: { code: 1, message: out.error.code, data: out.error.params }, id });
  }
  return out.ok
    ? JSON.stringify({ result: out.value, error: null, id })
    : JSON.stringify({ result: null, error: out.error.description, id });
}
