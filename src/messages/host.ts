/** host: enabling and disabling, time, memory, the management interface, evacuation. */
import { readFileSync } from 'node:fs';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Ref } from '../datamodel/generated/records.ts';
import { MESSAGES } from '../datamodel/model.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import { notImplemented, type CallContext, type PoolService } from './context.ts';
import { hostDataSourceHandlers } from './data-sources.ts';
import type { host_handlers, pool_handlers } from './generated/handlers.ts';
import { poolHaHandlers } from './pool-ha.ts';
import { poolMigrate, xenopsOf } from './vm.ts';
import { evacuationPlan, preventingEvacuation } from '../pool/evacuation.ts';
import { ERRORS, type ErrorCode } from '../datamodel/errors.ts';

/** This host, or HOST_OFFLINE: a pool of one has no other host to reach. */
function thisHost(ctx: CallContext, host: Ref<'host'>): Ref<'host'> {
  if (host !== ctx.services.hostRef()) throw new XenApiError('HOST_OFFLINE', host);
  return host;
}

const errorCode = (code: string | undefined): ErrorCode => (code !== undefined && Object.hasOwn(ERRORS, code) ? (code as ErrorCode) : 'INTERNAL_ERROR');

function poolOf(ctx: CallContext): PoolService {
  const p = ctx.services.pool;
  if (!p) throw new XenApiError('NOT_IMPLEMENTED', 'no pool subsystem on this host');
  return p;
}

export const hostHandlers: host_handlers = {
  // any host of the pool: placement reads the flag on the master
  disable: (ctx, a) => {
    ctx.services.store.transact((tx) => tx.update('host', a.host, { enabled: false }));
  },
  enable: (ctx, a) => {
    ctx.services.store.transact((tx) => tx.update('host', a.host, { enabled: true }));
  },
  get_servertime: () => formatDateTime(new Date()),
  get_server_localtime: () => formatDateTime(new Date()),
  compute_free_memory: (ctx, a) => {
    thisHost(ctx, a.host);
    return xenopsOf(ctx).freeMemory();
  },
  // as xapi: the host's overhead is constant, kept in its record
  compute_memory_overhead: (ctx, a) => ctx.services.store.must('host', a.host).memory_overhead,
  get_management_interface: (ctx, a) =>
    ctx.services.store.where('PIF', (p) => p.host === a.host && p.management)[0]?.[0] ?? NULL_REF,
  get_server_certificate: (ctx) => {
    try {
      return readFileSync(`${ctx.services.dataDir}/xenon-cert.pem`, 'utf8');
    } catch {
      return '';
    }
  },
  // no status-report collection on this host
  get_system_status_capabilities: notImplemented,
  get_vms_which_prevent_evacuation: (ctx, a) => preventingEvacuation(evacuationPlan(ctx.services.store, a.self)),
  // xapi's "Miami style": every reason in one CANNOT_EVACUATE_HOST
  assert_can_evacuate: (ctx, a) => {
    const errors = Object.values(preventingEvacuation(evacuationPlan(ctx.services.store, a.host)));
    if (errors.length) throw new XenApiError('CANNOT_EVACUATE_HOST', errors.map((e) => e.join(',')).join('|'));
  },
  evacuate: async (ctx, a) => {
    const plan = evacuationPlan(ctx.services.store, a.host);
    for (const p of plan.values()) if ('error' in p) throw new XenApiError(errorCode(p.error[0]), ...p.error.slice(1));
    let done = 0;
    for (const [vm, p] of plan) {
      if ('to' in p) await poolMigrate(ctx, vm, p.to);
      ctx.task?.progress(++done / plan.size);
    }
  },
  list_methods: () => [...MESSAGES.values()].filter((m) => !m.hidden).map((m) => m.wireName),
  get_log: notImplemented, // as xapi itself
  emergency_clear_mandatory_guidance: notImplemented,
  set_https_only: notImplemented,
  apply_updates: notImplemented,
  emergency_reenable_tls_verification: notImplemented,
  emergency_disable_tls_verification: notImplemented,
  set_numa_affinity_policy: notImplemented,
  get_sched_gran: notImplemented,
  set_sched_gran: notImplemented,
  set_uefi_certificates: notImplemented,
  set_multipathing: notImplemented,
  set_iscsi_iqn: notImplemented,
  set_ssl_legacy: notImplemented,
  disable_display: notImplemented,
  enable_display: notImplemented,
  declare_dead: notImplemented,
  migrate_receive: notImplemented,
  disable_local_storage_caching: notImplemented,
  enable_local_storage_caching: notImplemented,
  set_power_on_mode: notImplemented,
  refresh_pack_info: notImplemented,
  apply_edition: notImplemented,
  reset_server_certificate: notImplemented,
  emergency_reset_server_certificate: notImplemented,
  install_server_certificate: notImplemented,
  refresh_server_certificate: notImplemented,
  retrieve_wlb_evacuate_recommendations: notImplemented,
  disable_external_auth: notImplemented,
  enable_external_auth: notImplemented,
  call_extension: notImplemented,
  has_extension: notImplemented,
  call_plugin: notImplemented,
  create_new_blob: notImplemented,
  backup_rrds: notImplemented,
  sync_data: notImplemented,
  set_hostname_live: notImplemented,
  shutdown_agent: notImplemented,
  restart_agent: notImplemented,
  management_disable: notImplemented,
  local_management_reconfigure: notImplemented,
  management_reconfigure: notImplemented,
  syslog_reconfigure: notImplemented,
  get_uncooperative_resident_VMs: notImplemented,
  ...hostDataSourceHandlers,
  emergency_ha_disable: notImplemented,
  power_on: notImplemented,
  destroy: notImplemented,
  license_remove: notImplemented,
  license_add: notImplemented,
  bugreport_upload: notImplemented,
  send_debug_keys: notImplemented,
  dmesg_clear: notImplemented,
  dmesg: notImplemented,
  reboot: notImplemented,
  shutdown: notImplemented,
};

export const poolHandlers: pool_handlers = {
  ...poolHaHandlers,
  get_license_state: () => ({ edition: 'xenon', expiry: 'never' }),
  sync_database: () => undefined,
  set_ext_auth_max_threads: notImplemented,
  set_local_auth_max_threads: notImplemented,
  set_update_sync_enabled: notImplemented,
  configure_update_sync: notImplemented,
  reset_telemetry_uuid: notImplemented,
  set_telemetry_next_collection: notImplemented,
  set_https_only: notImplemented,
  set_custom_uefi_certificates: notImplemented,
  set_uefi_certificates: notImplemented,
  disable_repository_proxy: notImplemented,
  configure_repository_proxy: notImplemented,
  disable_client_certificate_auth: notImplemented,
  enable_client_certificate_auth: notImplemented,
  check_update_readiness: notImplemented,
  sync_updates: notImplemented,
  remove_repository: notImplemented,
  add_repository: notImplemented,
  set_repositories: notImplemented,
  rotate_secret: notImplemented,
  remove_from_guest_agent_config: notImplemented,
  add_to_guest_agent_config: notImplemented,
  has_extension: notImplemented,
  set_igmp_snooping_enabled: notImplemented,
  disable_ssl_legacy: notImplemented,
  apply_edition: notImplemented,
  disable_local_storage_caching: notImplemented,
  enable_local_storage_caching: notImplemented,
  test_archive_target: notImplemented,
  set_vswitch_controller: notImplemented,
  disable_redo_log: notImplemented,
  enable_redo_log: notImplemented,
  enable_tls_verification: notImplemented,
  certificate_sync: notImplemented,
  crl_list: notImplemented,
  crl_uninstall: notImplemented,
  crl_install: notImplemented,
  uninstall_ca_certificate: notImplemented,
  install_ca_certificate: notImplemented,
  certificate_list: notImplemented,
  certificate_uninstall: notImplemented,
  certificate_install: notImplemented,
  send_test_post: notImplemented,
  retrieve_wlb_recommendations: notImplemented,
  retrieve_wlb_configuration: notImplemented,
  send_wlb_configuration: notImplemented,
  deconfigure_wlb: notImplemented,
  initialize_wlb: notImplemented,
  detect_nonhomogeneous_external_auth: notImplemented,
  disable_external_auth: notImplemented,
  enable_external_auth: notImplemented,
  create_new_blob: notImplemented,
  ha_prevent_restarts_for: notImplemented,
  designate_new_master: (ctx, a) => poolOf(ctx).designateNewMaster(a.host),
  create_VLAN_from_PIF: notImplemented,
  management_reconfigure: notImplemented,
  create_VLAN: notImplemented,
  recover_slaves: (ctx) => poolOf(ctx).recoverSlaves(),
  emergency_reset_master: (ctx, a) => poolOf(ctx).emergencyResetMaster(a.master_address),
  emergency_transition_to_master: (ctx) => poolOf(ctx).emergencyTransitionToMaster(),
  eject: (ctx, a) => poolOf(ctx).eject(a.host),
  join_force: (ctx, a) => poolOf(ctx).join(ctx, a.master_address, a.master_username, a.master_password, true),
  join: (ctx, a) => poolOf(ctx).join(ctx, a.master_address, a.master_username, a.master_password, false),
};
