/** XenAPI actions the pages share: each runs as a task (so the tasks panel shows it) and waits for it through events. */
import type { Ref, Records, Enum_vm_operations } from '../../src/client/generated.ts';
import type { Console } from './context.ts';

/** xapi's create fills in every field left out with its default, so a create needs only the fields it sets. */
export function partialRecord<C extends keyof Records>(fields: Partial<Records[C]>): Records[C] {
  return fields as Records[C];
}

/** A task's result is XML-RPC text, as xapi writes it (`<value>OpaqueRef:…</value>`): the plain value. */
export function taskValue(result: string): string {
  const m = /^\s*<value>(?:<string>)?([\s\S]*?)(?:<\/string>)?<\/value>\s*$/.exec(result);
  if (!m) return result;
  return m[1].replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;|&apos;/g, "'").replace(/&amp;/g, '&');
}

/** Runs an Async call and waits for its task through events; the task's value. */
export async function viaTask(c: Console, task: Promise<string>): Promise<string> {
  return taskValue(await c.store.waitTask(await task));
}

/** The VM power and copy operations with buttons, in the order shown. */
export const VM_BUTTONS = ['start', 'clean_shutdown', 'clean_reboot', 'suspend', 'resume', 'pause', 'unpause', 'hard_shutdown', 'hard_reboot'] as const satisfies readonly Enum_vm_operations[];
export type VmButton = (typeof VM_BUTTONS)[number];

export function vmOperation(c: Console, vm: Ref<'VM'>, op: VmButton): Promise<string> {
  const a = c.client.async.VM;
  switch (op) {
    case 'start': return viaTask(c, a.start(vm, false, false));
    case 'resume': return viaTask(c, a.resume(vm, false, false));
    case 'clean_shutdown': return viaTask(c, a.clean_shutdown(vm));
    case 'hard_shutdown': return viaTask(c, a.hard_shutdown(vm));
    case 'clean_reboot': return viaTask(c, a.clean_reboot(vm));
    case 'hard_reboot': return viaTask(c, a.hard_reboot(vm));
    case 'suspend': return viaTask(c, a.suspend(vm));
    case 'pause': return viaTask(c, a.pause(vm));
    case 'unpause': return viaTask(c, a.unpause(vm));
  }
}

/** The VM's own disks: not CDs, not disks another VM also uses. */
function ownDisks(c: Console, vm: Ref<'VM'>): string[] {
  const { store } = c;
  const out: string[] = [];
  for (const vbdRef of store.get('VM', vm)?.VBDs ?? []) {
    const vbd = store.get('VBD', vbdRef);
    if (!vbd || vbd.type !== 'Disk') continue;
    const vdi = store.get('VDI', vbd.VDI);
    if (vdi && vdi.VBDs.every((other) => store.get('VBD', other)?.VM === vm)) out.push(vbd.VDI);
  }
  return out;
}

/**
 * Deletes a halted VM, as XenCenter does: with `everything`, also its own
 * disks and its snapshots (with theirs); then the record.
 */
export async function deleteVm(c: Console, vm: Ref<'VM'>, everything: boolean): Promise<void> {
  const snapshots = everything ? [...(c.store.get('VM', vm)?.snapshots ?? [])] : [];
  const disks = everything ? ownDisks(c, vm) : [];
  await viaTask(c, c.client.async.VM.destroy(vm));
  for (const vdi of disks) await viaTask(c, c.client.async.VDI.destroy(vdi));
  for (const snap of snapshots) await deleteVm(c, snap, true);
}
