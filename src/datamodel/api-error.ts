import { ERRORS, type ErrorCode } from './errors.ts';

/**
 * A XenAPI failure: travels to the client as `ErrorDescription: [code, ...params]`.
 * Every layer throws these for anything a caller got wrong.
 */
export class XenApiError extends Error {
  readonly code: ErrorCode;
  readonly params: readonly string[];

  constructor(code: ErrorCode, ...params: (string | number | boolean)[]) {
    super(`${code}${params.length ? `: ${params.join(', ')}` : ''}`);
    this.name = 'XenApiError';
    this.code = code;
    this.params = params.map(String);
  }

  /** The wire form: `[code, param, …]`. */
  get description(): string[] {
    return [this.code, ...this.params];
  }
}

export const isErrorCode = (s: string): s is ErrorCode => Object.hasOwn(ERRORS, s);

/** Turns anything thrown into the XenAPI error a client should see. */
export function toApiError(e: unknown): XenApiError {
  if (e instanceof XenApiError) return e;
  const text = e instanceof Error ? e.message : String(e);
  return new XenApiError('INTERNAL_ERROR', text);
}
