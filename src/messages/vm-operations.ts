/**
 * Which operations a VM allows in each state, and the lock that marks one
 * in progress (current_operations) so two cannot collide.
 */
import { randomUUID } from 'node:crypto';
import { XenApiError } from '../datamodel/api-error.ts';
import type { Enum_vm_operations } from '../datamodel/generated/records.ts';
import type { DbRecord, Store } from '../db/store.ts';

const ALWAYS_WHEN_HALTED: Enum_vm_operations[] = ['start', 'start_on', 'clone', 'copy', 'snapshot', 'export', 'metadata_export', 'destroy', 'provision',
  'make_into_template', 'changing_static_range', 'changing_dynamic_range', 'changing_memory_limits', 'changing_shadow_memory',
  'create_template', 'checkpoint'];

const BY_POWER_STATE: Record<string, readonly Enum_vm_operations[]> = {
  Halted: ALWAYS_WHEN_HALTED.filter((o) => o !== 'checkpoint'),
  Running: ['clean_shutdown', 'hard_shutdown', 'shutdown', 'clean_reboot', 'hard_reboot', 'pause', 'suspend', 'snapshot', 'checkpoint',
    'pool_migrate', 'migrate_send', 'changing_dynamic_range', 'changing_memory_live', 'send_sysrq', 'send_trigger', 'power_state_reset'],
  Paused: ['unpause', 'hard_shutdown', 'shutdown', 'hard_reboot', 'snapshot', 'power_state_reset'],
  Suspended: ['resume', 'resume_on', 'hard_shutdown', 'shutdown', 'clone', 'copy', 'snapshot', 'export', 'power_state_reset'],
};

/** Operations allowed now, as xapi would list them in allowed_operations. */
export function allowedOperations(vm: DbRecord): Enum_vm_operations[] {
  if (vm.is_control_domain) return [];
  if (Object.keys(vm.current_operations as object).length > 0) return [];
  const blocked = vm.blocked_operations as Record<string, string>;
  let ops = [...(BY_POWER_STATE[String(vm.power_state)] ?? [])];
  if (vm.is_a_template || vm.is_a_snapshot) ops = ops.filter((o) => ['clone', 'copy', 'export', 'destroy', 'provision', 'metadata_export', 'create_template'].includes(o));
  if (vm.is_a_snapshot) ops.push('revert');
  return ops.filter((o) => !Object.hasOwn(blocked, o));
}

const lower = (s: unknown): string => String(s).toLowerCase();

/** The power states in which an operation makes sense (for VM_BAD_POWER_STATE's "expected"). */
function expectedState(op: string): string {
  for (const [state, ops] of Object.entries(BY_POWER_STATE)) if (ops.some((o) => o === op)) return lower(state);
  return 'halted';
}

/** Throws the error xapi gives when `op` cannot run on this VM now. */
export function assertOperation(store: Store, ref: string, op: string): DbRecord {
  const vm = store.must('VM', ref);
  const current = Object.entries(vm.current_operations as Record<string, string>);
  if (current.length > 0) throw new XenApiError('OTHER_OPERATION_IN_PROGRESS', 'VM', ref, current[0][1], current[0][0]);
  if (vm.is_control_domain) throw new XenApiError('OPERATION_NOT_ALLOWED', `${op} is not allowed on the control domain`);
  const blocked = vm.blocked_operations as Record<string, string>;
  if (Object.hasOwn(blocked, op)) throw new XenApiError('OPERATION_BLOCKED', ref, blocked[op]);
  if ((vm.is_a_template || vm.is_a_snapshot) && ['start', 'start_on', 'resume', 'resume_on'].includes(op)) throw new XenApiError('VM_IS_TEMPLATE', ref);
  if (!(BY_POWER_STATE[String(vm.power_state)] ?? []).some((o) => o === op)) {
    throw new XenApiError('VM_BAD_POWER_STATE', ref, expectedState(op), lower(vm.power_state));
  }
  return vm;
}

/** Recomputes allowed_operations from the record as it stands. */
export function refreshAllowed(store: Store, ref: string): void {
  const vm = store.get('VM', ref);
  if (!vm) return;
  const ops = allowedOperations(vm);
  if ((vm.allowed_operations as string[]).join() !== ops.join()) store.transact((tx) => tx.update('VM', ref, { allowed_operations: ops }));
}

/**
 * Runs `fn` with `op` marked in the VM's current_operations; the mark is
 * taken atomically after the checks and always removed afterwards.
 */
export async function withOperation<T>(store: Store, ref: string, op: Enum_vm_operations, taskRef: string | null, fn: (vm: DbRecord) => Promise<T>): Promise<T> {
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
      refreshAllowed(store, ref);
    }
  }
}
