/**
 * The data-source messages of host and VM (xapi's `*.get_data_sources`,
 * `query_data_source`, `record_data_source`, `forget_data_source_archives`),
 * served by the metrics service's RRDs. A VM's are the master's (it reads
 * every VM of the pool); a member host's are that member's own, asked over
 * the pool channel, as xapi's master forwards them.
 */
import { XenApiError } from '../datamodel/api-error.ts';
import type { Ref } from '../datamodel/generated/records.ts';
import type { host_handlers, VM_handlers } from './generated/handlers.ts';
import type { MetricsOwner, MetricsService, Services } from './context.ts';

function metricsOf(services: Services, message: string): MetricsService {
  if (!services.metrics) throw new XenApiError('NOT_IMPLEMENTED', message);
  return services.metrics;
}

function hostOwner(services: Services, host: Ref<'host'>): MetricsOwner {
  const rec = services.store.get('host', host);
  if (!rec) throw new XenApiError('HANDLE_INVALID', 'host', host);
  return { kind: 'host', uuid: String(rec.uuid) };
}

function vmOwner(services: Services, vm: Ref<'VM'>): MetricsOwner {
  const rec = services.store.get('VM', vm);
  if (!rec) throw new XenApiError('HANDLE_INVALID', 'VM', vm);
  return { kind: 'vm', uuid: String(rec.uuid) };
}

type HostDs = Pick<host_handlers, 'get_data_sources' | 'query_data_source' | 'record_data_source' | 'forget_data_source_archives'>;
type VmDs = Pick<VM_handlers, 'get_data_sources' | 'query_data_source' | 'record_data_source' | 'forget_data_source_archives'>;

/** A member of this master's pool, whose own RRD answers for it; undefined for this host. */
function memberHost(services: Services, host: Ref<'host'>): string | undefined {
  hostOwner(services, host);
  return host !== services.hostRef() && services.pool && !services.store.isReplica ? host : undefined;
}

export const hostDataSourceHandlers: HostDs = {
  get_data_sources: ({ services }, a) => {
    const member = memberHost(services, a.host);
    if (member) return services.pool!.hostDataSourcesOn(member);
    return metricsOf(services, 'host.get_data_sources').dataSources(hostOwner(services, a.host));
  },
  query_data_source: ({ services }, a) => {
    const member = memberHost(services, a.host);
    if (member) return services.pool!.queryHostDataSourceOn(member, a.data_source);
    return metricsOf(services, 'host.query_data_source').query(hostOwner(services, a.host), a.data_source);
  },
  record_data_source: ({ services }, a) => {
    const member = memberHost(services, a.host);
    if (member) return services.pool!.changeHostDataSourceOn(member, 'record', a.data_source);
    return metricsOf(services, 'host.record_data_source').record(hostOwner(services, a.host), a.data_source);
  },
  forget_data_source_archives: ({ services }, a) => {
    const member = memberHost(services, a.host);
    if (member) return services.pool!.changeHostDataSourceOn(member, 'forget', a.data_source);
    return metricsOf(services, 'host.forget_data_source_archives').forget(hostOwner(services, a.host), a.data_source);
  },
};

export const vmDataSourceHandlers: VmDs = {
  get_data_sources: ({ services }, a) => metricsOf(services, 'VM.get_data_sources').dataSources(vmOwner(services, a.self)),
  query_data_source: ({ services }, a) => metricsOf(services, 'VM.query_data_source').query(vmOwner(services, a.self), a.data_source),
  record_data_source: ({ services }, a) => metricsOf(services, 'VM.record_data_source').record(vmOwner(services, a.self), a.data_source),
  forget_data_source_archives: ({ services }, a) => metricsOf(services, 'VM.forget_data_source_archives').forget(vmOwner(services, a.self), a.data_source),
};
