/**
 * Which operations a VM allows now, and the lock that marks one in progress
 * (current_operations) so two cannot collide.
 *
 * allowed_operations is derived, never written by hand: an operation is listed
 * only when its message has behaviour on this daemon (Services.implemented),
 * the power state permits it, the VM is not a template or snapshot (except the
 * few operations those allow), and — for the operations that need the guest's
 * help — the guest has shown it can do them.
 */
import { randomUUID } from 'node:crypto';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Enum_vm_operations } from '../datamodel/generated/records.ts';
import { NULL_REF } from '../datamodel/types.ts';
import type { Row, Store } from '../db/store.ts';
import type { Services } from './context.ts';

/** What the checks need: the records, which messages have behaviour here, and which subsystems run. */
export type OperationEnv = Pick<Services, 'store' | 'implemented' | 'storage' | 'xenops'>;

type Op = Enum_vm_operations;

/**
 * The message that performs each operation, where it is not `VM.<operation>`;
 * null: no message (export is an HTTP action and always served with storage).
 */
const PERFORMED_BY: Readonly<Partial<Record<Op, string | null>>> = {
  make_into_template: 'VM.set_is_a_template',
  changing_static_range: 'VM.set_memory_static_range',
  changing_dynamic_range: 'VM.set_memory_dynamic_range',
  changing_memory_limits: 'VM.set_memory_limits',
  changing_shadow_memory: 'VM.set_HVM_shadow_multiplier',
  changing_VCPUs: 'VM.set_VCPUs_max',
  changing_VCPUs_live: 'VM.set_VCPUs_number_live',
  changing_memory_live: 'VM.set_memory_target_live',
  export: null,
};

const WHEN_HALTED: readonly Op[] = ['start', 'start_on', 'clone', 'copy', 'snapshot', 'export', 'destroy', 'provision', 'make_into_template',
  'changing_static_range', 'changing_dynamic_range', 'changing_memory_limits', 'changing_shadow_memory', 'changing_VCPUs',
  'create_template', 'metadata_export'];

/** The operations each power state permits, before anything else is asked. */
const BY_POWER_STATE: Readonly<Record<string, readonly Op[]>> = {
  Halted: WHEN_HALTED,
  Running: ['clean_shutdown', 'hard_shutdown', 'shutdown', 'clean_reboot', 'hard_reboot', 'pause', 'suspend', 'snapshot', 'checkpoint',
    'pool_migrate', 'migrate_send', 'changing_dynamic_range', 'changing_memory_live', 'changing_VCPUs_live', 'send_sysrq', 'send_trigger',
    'power_state_reset'],
  Paused: ['unpause', 'hard_shutdown', 'shutdown', 'hard_reboot', 'snapshot', 'checkpoint', 'power_state_reset'],
  Suspended: ['resume', 'resume_on', 'hard_shutdown', 'shutdown', 'clone', 'copy', 'snapshot', 'export', 'power_state_reset'],
};

/** What a template or snapshot still allows (as xapi: no booting them). */
const TEMPLATE_OPERATIONS = new Set<string>(['clone', 'copy', 'export', 'destroy', 'provision', 'metadata_export', 'create_template',
  'changing_static_range', 'changing_dynamic_range', 'changing_memory_limits', 'changing_VCPUs', 'changing_shadow_memory']);

const NEVER_ON_SNAPSHOTS = new Set<string>(['provision', 'changing_static_range', 'changing_dynamic_range', 'changing_memory_limits', 'changing_VCPUs', 'changing_shadow_memory']);

/**
 * Operations that need the guest's cooperation, and the guest-metrics
 * features (any one suffices) that show it can, as xapi's
 * check_op_for_feature asks for them in allowed_operations. Xenon's guests run
 * under QEMU: a clean shutdown or reboot is the ACPI power button, which only
 * an OS that handles it obeys. Xenon takes a live guest agent as that sign (it
 * sets the feature-* keys in VM_guest_metrics.other when the agent answers;
 * see guestMetricsFields), as xapi takes a guest's PV drivers. Suspend would
 * work without the guest's help under QEMU (the device model saves the whole
 * machine), but xapi offers it only to a guest that says it can be suspended,
 * and clients follow allowed_operations, so Xenon does the same.
 * As in xapi this gates allowed_operations only: the call itself is still tried.
 */
const GUEST_FEATURES: Readonly<Record<string, readonly string[]>> = {
  clean_shutdown: ['feature-shutdown', 'feature-poweroff'],
  clean_reboot: ['feature-shutdown', 'feature-reboot'],
  suspend: ['feature-suspend'],
  changing_VCPUs_live: ['feature-vcpu-hotplug'],
};

/** Operations whose behaviour lives in a subsystem: without it they are not offered. */
const DISK_OPERATIONS = new Set<string>(['clone', 'copy', 'snapshot', 'provision', 'revert', 'export', 'checkpoint']);

export function messageOf(op: Op): string | null {
  const named = PERFORMED_BY[op];
  return named === undefined ? `VM.${op}` : named;
}

/** Operations the domain manager performs. */
const POWER_OPERATIONS = new Set<string>(['start', 'start_on', 'resume', 'resume_on', 'clean_shutdown', 'hard_shutdown', 'shutdown',
  'clean_reboot', 'hard_reboot', 'pause', 'unpause', 'suspend', 'power_state_reset']);

function runsHere(env: OperationEnv, op: Op): boolean {
  if (DISK_OPERATIONS.has(op) && !env.storage) return false;
  if (POWER_OPERATIONS.has(op) && !env.xenops) return false;
  const message = messageOf(op);
  return message === null || env.implemented(message);
}

function guestCan(store: Store, vm: Row<'VM'>, op: Op): boolean {
  const needed = GUEST_FEATURES[op];
  if (!needed) return true;
  const gm = vm.guest_metrics === NULL_REF ? undefined : store.get('VM_guest_metrics', String(vm.guest_metrics));
  if (!gm || gm.live !== true) return false;
  const other = gm.other;
  return needed.some((f) => other[f] === '1');
}

/** Operations allowed now, as allowed_operations lists them. */
export function allowedOperations(env: OperationEnv, vm: Row<'VM'>): Op[] {
  if (vm.is_control_domain) return [];
  if (Object.keys(vm.current_operations).length > 0) return [];
  const blocked = vm.blocked_operations;
  let ops = [...(BY_POWER_STATE[String(vm.power_state)] ?? [])];
  if (vm.is_a_template || vm.is_a_snapshot) ops = ops.filter((o) => TEMPLATE_OPERATIONS.has(o));
  if (vm.is_a_snapshot) ops = ops.filter((o) => !NEVER_ON_SNAPSHOTS.has(o)).concat('revert');
  return ops.filter((o) => !Object.hasOwn(blocked, o) && runsHere(env, o) && guestCan(env.store, vm, o));
}

const lower = (s: unknown): string => String(s).toLowerCase();

/** The power states in which an operation makes sense (for VM_BAD_POWER_STATE's "expected"). */
function expectedState(op: string): string {
  for (const [state, ops] of Object.entries(BY_POWER_STATE)) if (ops.some((o) => o === op)) return lower(state);
  return 'halted';
}

const BOOTS = new Set(['start', 'start_on', 'resume', 'resume_on']);

/** Throws the error xapi gives when `op` cannot run on this VM now. */
export function assertOperation(store: Store, ref: string, op: string): Row<'VM'> {
  const vm = store.must('VM', ref);
  const current = Object.entries(vm.current_operations);
  if (current.length > 0) throw new XenApiError('OTHER_OPERATION_IN_PROGRESS', 'VM', ref, current[0][1], current[0][0]);
  if (vm.is_control_domain) throw new XenApiError('OPERATION_NOT_ALLOWED', `${op} is not allowed on the control domain`);
  const blocked = vm.blocked_operations;
  if (Object.hasOwn(blocked, op)) throw new XenApiError('OPERATION_BLOCKED', ref, blocked[op]);
  if ((vm.is_a_template || vm.is_a_snapshot) && BOOTS.has(op)) throw new XenApiError('VM_IS_TEMPLATE', ref);
  if (vm.is_a_snapshot && NEVER_ON_SNAPSHOTS.has(op)) throw new XenApiError('OPERATION_NOT_ALLOWED', `${op} is not allowed on a snapshot`);
  if (!(BY_POWER_STATE[String(vm.power_state)] ?? []).some((o) => o === op)) {
    throw new XenApiError('VM_BAD_POWER_STATE', ref, expectedState(op), lower(vm.power_state));
  }
  return vm;
}

/** Recomputes allowed_operations from the record as it stands. */
export function refreshAllowed(env: OperationEnv, ref: string): void {
  const vm = env.store.get('VM', ref);
  if (!vm) return;
  const ops = allowedOperations(env, vm);
  if (vm.allowed_operations.join() !== ops.join()) env.store.transact((tx) => tx.update('VM', ref, { allowed_operations: ops }));
}

/**
 * Runs `fn` with `op` marked in the VM's current_operations; the mark is
 * taken atomically after the checks and always removed afterwards.
 */
export async function withOperation<T>(env: OperationEnv, ref: string, op: Op, taskRef: string | null, fn: (vm: Row<'VM'>) => Promise<T>): Promise<T> {
  const { store } = env;
  const id = taskRef ?? `OpaqueRef:${randomUUID()}`;
  const vm = store.transact((tx) => {
    assertOperation(store, ref, op);
    return tx.update('VM', ref, { current_operations: { [id]: op }, allowed_operations: [] });
  });
  try {
    return await fn(vm);
  } finally {
    const now = store.get('VM', ref);
    if (now) {
      const { [id]: _done, ...rest } = now.current_operations;
      store.transact((tx) => tx.update('VM', ref, { current_operations: rest }));
      refreshAllowed(env, ref);
    }
  }
}
