/** All classes of the datamodel, in the order the API lists them. */
import type { ClassDecl } from '../dsl.ts';
import session_ from './session.ts';
import auth_ from './auth.ts';
import subject_ from './subject.ts';
import role_ from './role.ts';
import user_ from './user.ts';
import task_ from './task.ts';
import event_ from './event.ts';
import pool_ from './pool.ts';
import host_ from './host.ts';
import host_cpu_ from './host_cpu.ts';
import host_metrics_ from './host_metrics.ts';
import vm_ from './vm.ts';
import vm_metrics_ from './vm_metrics.ts';
import vm_guest_metrics_ from './vm_guest_metrics.ts';
import vbd_ from './vbd.ts';
import vbd_metrics_ from './vbd_metrics.ts';
import vdi_ from './vdi.ts';
import sr_ from './sr.ts';
import sm_ from './sm.ts';
import pbd_ from './pbd.ts';
import pif_ from './pif.ts';
import pif_metrics_ from './pif_metrics.ts';
import bond_ from './bond.ts';
import vlan_ from './vlan.ts';
import tunnel_ from './tunnel.ts';
import network_ from './network.ts';
import vif_ from './vif.ts';
import vif_metrics_ from './vif_metrics.ts';
import console_ from './console.ts';
import message_ from './message.ts';
import secret_ from './secret.ts';
import blob_ from './blob.ts';
import data_source_ from './data_source.ts';

export const CLASSES: readonly ClassDecl[] = [
  session_,
  auth_,
  subject_,
  role_,
  user_,
  task_,
  event_,
  pool_,
  host_,
  host_cpu_,
  host_metrics_,
  vm_,
  vm_metrics_,
  vm_guest_metrics_,
  vbd_,
  vbd_metrics_,
  vdi_,
  sr_,
  sm_,
  pbd_,
  pif_,
  pif_metrics_,
  bond_,
  vlan_,
  tunnel_,
  network_,
  vif_,
  vif_metrics_,
  console_,
  message_,
  secret_,
  blob_,
  data_source_,
];
