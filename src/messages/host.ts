/** host: enabling and disabling, time, memory, the management interface, evacuation. */
import { readFileSync } from 'node:fs';
import { XenApiError } from '../datamodel/api-error.ts';
import { MESSAGES } from '../datamodel/model.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { Args, CallContext, HandlerTable } from './context.ts';
import { xenopsOf } from './vm.ts';

const hostArg = (a: Args): string => (a.host ?? a.self) as string;

function thisHost(ctx: CallContext, a: Args): string {
  const host = hostArg(a);
  if (host !== ctx.services.hostRef()) throw new XenApiError('HOST_OFFLINE', host);
  return host;
}

const residentVms = (ctx: CallContext, host: string): string[] =>
  ctx.services.store.where('VM', (v) => v.resident_on === host && !v.is_control_domain && (v.power_state === 'Running' || v.power_state === 'Paused')).map(([r]) => r);

export const hostHandlers: HandlerTable = {
  disable: (ctx, a) => {
    const host = thisHost(ctx, a);
    ctx.services.store.transact((tx) => tx.update('host', host, { enabled: false }));
  },
  enable: (ctx, a) => {
    const host = thisHost(ctx, a);
    ctx.services.store.transact((tx) => tx.update('host', host, { enabled: true }));
  },
  get_servertime: () => formatDateTime(new Date()),
  get_server_localtime: () => formatDateTime(new Date()),
  compute_free_memory: (ctx, a) => {
    thisHost(ctx, a);
    return xenopsOf(ctx).freeMemory();
  },
  compute_memory_overhead: () => 0,
  get_management_interface: (ctx, a) => {
    const host = hostArg(a);
    return ctx.services.store.where('PIF', (p) => p.host === host && p.management === true)[0]?.[0] ?? NULL_REF;
  },
  get_server_certificate: (ctx) => {
    try {
      return readFileSync(`${ctx.services.dataDir}/xenon-cert.pem`, 'utf8');
    } catch {
      return '';
    }
  },
  get_system_status_capabilities: () => '<?xml version="1.0" ?><system-status-capabilities></system-status-capabilities>',
  get_vms_which_prevent_evacuation: (ctx, a) => {
    const out: Record<string, string[]> = {};
    // with a single host, every running VM has nowhere to go
    for (const vm of residentVms(ctx, hostArg(a))) out[vm] = ['NO_HOSTS_AVAILABLE'];
    return out;
  },
  assert_can_evacuate: (ctx, a) => {
    if (residentVms(ctx, hostArg(a)).length) throw new XenApiError('NO_HOSTS_AVAILABLE');
  },
  evacuate: (ctx, a) => {
    if (residentVms(ctx, hostArg(a)).length) throw new XenApiError('NO_HOSTS_AVAILABLE');
  },
  list_methods: () => [...MESSAGES.values()].filter((m) => !m.hidden).map((m) => m.wireName),
  get_log: () => '',
};

export const poolHandlers: HandlerTable = {
  get_license_state: () => ({ edition: 'xenon', expiry: 'never' }),
  sync_database: () => undefined,
};
