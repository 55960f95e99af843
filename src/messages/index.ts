/**
 * Every class's explicit behaviour, by class name: one statically typed set
 * for the daemon. Subsystems are reached through `ctx.services` (absent ones
 * answer NOT_IMPLEMENTED), so the set does not depend on which plugins run.
 */
import { notImplemented } from './context.ts';
import type { Handlers } from './generated/handlers.ts';
import { vmDataSourceHandlers } from './data-sources.ts';
import { eventHandlers } from './event.ts';
import { hostHandlers, poolHandlers } from './host.ts';
import { vmHaHandlers } from './pool-ha.ts';
import { messageHandlers } from './message.ts';
import { bondHandlers, networkHandlers, pifHandlers, vifHandlers, vlanHandlers } from './network.ts';
import { roleHandlers } from './role.ts';
import { sessionHandlers } from './session.ts';
import { pbdHandlers, srHandlers } from './sr.ts';
import { subjectHandlers } from './subject.ts';
import { taskHandlers } from './task.ts';
import { tunnelHandlers } from './tunnel.ts';
import { vbdHandlers } from './vbd.ts';
import { vdiHandlers } from './vdi.ts';
import { vmStorageHandlers } from './vm-storage.ts';
import { vmHandlers } from './vm.ts';


/** Every explicit message of every class has a handler or is marked notImplemented: the compiler checks it. */
export const HANDLERS: Handlers = {
  session: sessionHandlers,
  // external authentication (AD/LDAP) is not offered: local accounts only
  auth: { get_group_membership: notImplemented, get_subject_information_from_identifier: notImplemented, get_subject_identifier: notImplemented },
  subject: subjectHandlers,
  role: roleHandlers,
  task: taskHandlers,
  event: eventHandlers,
  pool: poolHandlers,
  host: hostHandlers,
  VM: {
    ...vmHandlers,
    ...vmStorageHandlers,
    ...vmHaHandlers,
    restart_device_models: notImplemented,
    import: notImplemented,
    set_has_vendor_device: notImplemented,
    call_plugin: notImplemented,
    query_services: notImplemented,
    set_appliance: notImplemented,
    import_convert: notImplemented,
    recover: notImplemented,
    get_SRs_required_for_recovery: notImplemented,
    assert_can_be_recovered: notImplemented,
    set_order: notImplemented,
    set_shutdown_delay: notImplemented,
    set_start_delay: notImplemented,
    set_snapshot_schedule: notImplemented,
    copy_bios_strings: notImplemented,
    set_bios_strings: notImplemented,
    retrieve_wlb_recommendations: notImplemented,
    assert_agile: notImplemented,
    create_new_blob: notImplemented,
    ...vmDataSourceHandlers,
    assert_can_migrate: notImplemented,
    migrate_send: notImplemented,
    maximise_memory: notImplemented,
    send_trigger: notImplemented,
    send_sysrq: notImplemented,
    set_shadow_multiplier_live: notImplemented,
    set_HVM_shadow_multiplier: notImplemented,
    wait_memory_target_live: notImplemented,
    set_memory_target_live: notImplemented,
    remove_from_NVRAM: notImplemented,
    add_to_NVRAM: notImplemented,
    set_NVRAM: notImplemented,
    add_to_VCPUs_params_live: notImplemented,
    set_VCPUs_number_live: notImplemented,
    checkpoint: notImplemented,
  },
  VBD: vbdHandlers,
  VDI: vdiHandlers,
  SR: srHandlers,
  PBD: pbdHandlers,
  PIF: pifHandlers,
  Bond: bondHandlers,
  VLAN: vlanHandlers,
  tunnel: tunnelHandlers,
  network: networkHandlers,
  VIF: vifHandlers,
  message: messageHandlers,
  blob: { create: notImplemented, destroy: notImplemented },
};
