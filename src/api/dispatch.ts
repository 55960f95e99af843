/**
 * Dispatch: from a method name and raw wire parameters to a result, all
 * driven by the datamodel — lookup, arity, session, roles, argument types,
 * handle checks, then the class's handler (or the generic one), sync or as a task.
 */
import { toApiError, XenApiError } from '../datamodel/api-error.ts';
import { findMessage, getClass, MESSAGES, type ModelMessage } from '../datamodel/model.ts';
import { NULL_REF, type XType } from '../datamodel/types.ts';
import type { SessionInfo } from '../auth/sessions.ts';
import { notImplemented, UNKNOWN_ORIGIN, type Args, type CallContext, type CallOrigin, type Services } from '../messages/context.ts';
import { runGeneric } from '../messages/generic.ts';
import type { Handlers } from '../messages/generated/handlers.ts';
import { toXml, unmarshal } from '../wire/marshal.ts';

export type CallOutcome =
  | { readonly ok: true; readonly type: XType; readonly value: unknown }
  | { readonly ok: false; readonly error: XenApiError };

const STRING: XType = { kind: 'string' };
const STRING_SET: XType = { kind: 'set', of: STRING };

/** A handler as dispatch calls it: by wire name, with arguments checked against the datamodel. */
type CheckedHandler = (ctx: CallContext, args: Args) => unknown;
/** Handlers are typed per message (messages/generated/handlers.ts); dispatch checks their arguments first. */
/** What a pool member still answers itself: everything else belongs to the master (HOST_IS_SLAVE, as xapi). */
const ON_MEMBERS = new Set(['pool.emergency_transition_to_master', 'pool.emergency_reset_master', 'session.slave_local_login_with_password', 'session.local_logout']);

const isHandler = (v: unknown): v is CheckedHandler => typeof v === 'function';

/** Every handler of a set by wire name (`Class.message`); explicit messages marked notImplemented are left out. */
export function handlersByWireName(set: Handlers): Map<string, CheckedHandler> {
  const out = new Map<string, CheckedHandler>();
  for (const [cls, table] of Object.entries(set)) {
    const entries: [string, unknown][] = table && typeof table === 'object' ? Object.entries(table) : [];
    for (const [name, entry] of entries) {
      if (!MESSAGES.has(`${cls}.${name}`)) throw new Error(`handler for undeclared message ${cls}.${name}`);
      if (entry === notImplemented) continue;
      if (!isHandler(entry)) throw new Error(`handler for ${cls}.${name} is not a function`);
      out.set(`${cls}.${name}`, entry);
    }
  }
  return out;
}

export class Dispatcher {
  private readonly handlers: ReadonlyMap<string, CheckedHandler>;
  private readonly listed: string[];

  constructor(
    private readonly services: Services,
    set: Handlers,
  ) {
    this.handlers = handlersByWireName(set);
    this.listed = this.computeListing();
  }

  /** Whether a message has behaviour (explicit handler or a generic one). */
  implemented(m: ModelMessage): boolean {
    return this.handlers.has(m.wireName) || m.generic !== undefined;
  }

  implementedByName(wireName: string): boolean {
    const m = MESSAGES.get(wireName);
    return m !== undefined && this.implemented(m);
  }

  private computeListing(): string[] {
    const out = ['system.listMethods'];
    for (const m of MESSAGES.values()) {
      if (m.hidden || m.lifecycle === 'removed') continue;
      // Xen Orchestra calls every <Class>.get_all_records it finds here and
      // warns on each failure: list that one only once the class can answer it.
      if (m.name === 'get_all_records' && !this.implemented(m)) continue;
      out.push(m.wireName);
      if (m.async) out.push(`Async.${m.wireName}`);
    }
    return out;
  }

  /** Runs a call; state changes and refusals go to the audit trail. */
  async call(method: string, raw: readonly unknown[], origin: CallOrigin = UNKNOWN_ORIGIN): Promise<CallOutcome> {
    const audited = this.services.audit.begin(method, raw, origin);
    const outcome = await this.perform(method, raw, origin);
    audited(outcome);
    return outcome;
  }

  private async perform(method: string, raw: readonly unknown[], origin: CallOrigin): Promise<CallOutcome> {
    try {
      if (method === 'system.listMethods') return { ok: true, type: STRING_SET, value: this.listed };
      const isAsync = method.startsWith('Async.');
      // Class_message is accepted as Class.message, as xapi does (also after Async.)
      const m = findMessage(isAsync ? method.slice(6) : method);
      if (!m || (isAsync && !m.async)) throw new XenApiError('MESSAGE_METHOD_UNKNOWN', method);
      const member = this.services.member;
      if (member && !ON_MEMBERS.has(m.wireName)) throw new XenApiError('HOST_IS_SLAVE', member.master);
      const session = this.checkArity(m, raw, method);
      const args = this.convertArgs(m, raw);
      if (m.lifecycle === 'removed') throw new XenApiError('MESSAGE_REMOVED');
      const handler = this.handlers.get(m.wireName) ?? (m.generic ? runGeneric : undefined);
      if (!handler) throw new XenApiError('NOT_IMPLEMENTED', m.wireName);
      if (isAsync) return { ok: true, type: { kind: 'ref', cls: 'task' }, value: this.startAsync(m, session!, args, handler, origin) };
      const value = await handler({ services: this.services, session: session!, origin, message: m, task: null }, args);
      // with HA on, a reply follows its writes into the redo log: what a deposed master did is refused, not lost
      await this.services.ha?.barrier();
      return { ok: true, type: m.result, value: m.result.kind === 'void' ? '' : value };
    } catch (e) {
      const error = toApiError(e);
      if (error.code === 'INTERNAL_ERROR') this.services.log.error({ err: e, method }, 'internal error');
      return { ok: false, error };
    }
  }

  /** Arity, then session and role: returns the caller's session (absent for login-style calls). */
  private checkArity(m: ModelMessage, raw: readonly unknown[], method: string): SessionInfo | undefined {
    const declared = m.params.length + (m.session ? 1 : 0);
    const minimum = m.minParams + (m.session ? 1 : 0);
    if (raw.length > declared || raw.length < minimum) {
      throw new XenApiError('MESSAGE_PARAMETER_COUNT_MISMATCH', method, m.params.length, raw.length - (m.session ? 1 : 0));
    }
    if (!m.session) return undefined;
    const session = this.services.sessions.check(raw[0]);
    // a message with no roles is for the local superuser alone (xapi's "local root only")
    const allowed = m.roles.length === 0 ? session.isLocalSuperuser : m.roles.some((r) => session.roles.has(r));
    if (!allowed) {
      throw new XenApiError('RBAC_PERMISSION_DENIED', m.wireName.toLowerCase(), 'No permission in the role of this session to perform this operation');
    }
    return session;
  }

  /** Checked arguments by name; trailing parameters left out get their declared defaults. */
  private convertArgs(m: ModelMessage, raw: readonly unknown[]): Args {
    const offset = m.session ? 1 : 0;
    const args: Record<string, unknown> = {};
    m.params.forEach((p, i) => {
      const v = raw[i + offset];
      if (v === undefined) {
        // arity was checked: only a parameter with a default can be missing
        const fallback = p.default?.value;
        args[p.name] = fallback !== null && typeof fallback === 'object' ? structuredClone(fallback) : fallback;
        return;
      }
      const value = unmarshal(p.type, v, p.name);
      if (p.type.kind === 'ref' && typeof value === 'string' && value !== NULL_REF && getClass(p.type.cls)?.decl.persistent) {
        if (!this.services.store.getAny(p.type.cls, value)) throw new XenApiError('HANDLE_INVALID', p.type.cls, value);
      }
      args[p.name] = value;
    });
    return args;
  }

  /** Async.<message>: a task now, the work in the background, the outcome on the task. */
  private startAsync(m: ModelMessage, session: SessionInfo, args: Args, handler: CheckedHandler, origin: CallOrigin): string {
    const { tasks } = this.services;
    const task = tasks.create(`Async.${m.wireName}`, '', session.ref);
    const ctx: CallContext = { services: this.services, session, origin, message: m, task };
    setImmediate(async () => {
      try {
        const value = await handler(ctx, args);
        await this.services.ha?.barrier();
        tasks.succeed(task.ref, m.result.kind === 'void' ? '' : toXml(m.result, value));
      } catch (e) {
        const error = toApiError(e);
        if (error.code === 'INTERNAL_ERROR') this.services.log.error({ err: e, method: m.wireName }, 'internal error in task');
        tasks.fail(task.ref, error.description);
      }
    });
    return task.ref;
  }
}
