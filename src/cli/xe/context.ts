/** What every xe command gets: the connection, its parameters and the output. */
import { getClass } from '../../datamodel/model.ts';
import { zeroValue } from '../../datamodel/types.ts';
import { enumValues } from '../../datamodel/model.ts';
import type { XenApiClient } from '../../client/client.ts';
import { CliError, type Transport } from './conn.ts';
import type { Resolver } from './format.ts';

export interface Ctx {
  /** The typed client: every call goes through it. */
  readonly client: XenApiClient;
  readonly transport: Transport;
  readonly res: Resolver;
  /** `key=value` parameters and `--flag`s (as `flag=true`), in command-line order. */
  readonly params: Map<string, string>;
  readonly out: (s: string) => void;
  readonly err: (s: string) => void;
  /** Set by a command to exit non-zero without an error message. */
  exitCode: number;
}

export interface Command {
  readonly name: string;
  readonly reqd: readonly string[];
  readonly optn: readonly string[];
  readonly help: string;
  /** Takes VM selectors (vm=, uuid=, any VM field filter, --multiple). */
  readonly vmSelectors?: boolean;
  /** Takes host selectors (host=, uuid=, any host field filter, --multiple). */
  readonly hostSelectors?: boolean;
  /** Accepts any `field=value` arguments (list filters, param-set, event-wait). */
  readonly freeParams?: boolean;
  /** Needs no session (help). */
  readonly noSession?: boolean;
  readonly run: (ctx: Ctx) => Promise<void>;
}

/** Parameters every command accepts. */
export const STD_PARAMS = ['minimal', 'multiple', 'force', 'params', 'all', 'trace'];

export function param(ctx: Ctx, name: string): string | undefined {
  return ctx.params.get(name);
}

export function reqParam(ctx: Ctx, name: string): string {
  const v = ctx.params.get(name);
  if (v === undefined) throw new CliError(`Required parameter not found: ${name}`, true);
  return v;
}

export function flag(ctx: Ctx, name: string): boolean {
  const v = ctx.params.get(name);
  return v !== undefined && /^(true|yes|1|on)$/i.test(v);
}

/** Calls a message by name with named arguments, in the datamodel's order; the rest at their zero values. */
export function invoke(ctx: Ctx, cls: string, msg: string, args: Record<string, unknown>): Promise<unknown> {
  const m = getClass(cls)?.messages.get(msg);
  if (!m) throw new CliError(`the datamodel has no message ${cls}.${msg}`);
  const values = m.params.map((p) => (p.name in args ? args[p.name] : zeroValue(p.type, (n) => enumValues(n)?.[0] ?? '')));
  return ctx.client.call(m.wireName, [ctx.client.session, ...values]);
}

/** Prefixed `k:` parameters as a map: `device-config:path=/x` → `{ path: '/x' }`. */
export function prefixedMap(ctx: Ctx, prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of ctx.params) if (k.startsWith(`${prefix}:`)) out[k.slice(prefix.length + 1)] = v;
  return out;
}
