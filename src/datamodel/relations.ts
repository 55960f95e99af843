/**
 * One-to-many relations: the set field on the "one" side is kept by the
 * database from the ref field on the "many" side (VM.VBDs from VBD.VM, …),
 * never written directly.
 */
export interface Relation {
  /** The class and ref field that point at the owner. */
  readonly child: { readonly cls: string; readonly field: string };
  /** The owner's class and the set field listing its children. */
  readonly owner: { readonly cls: string; readonly field: string };
}

const rel = (owner: string, child: string): Relation => {
  const [oc, of] = owner.split('.');
  const [cc, cf] = child.split('.');
  return { owner: { cls: oc, field: of }, child: { cls: cc, field: cf } };
};

export const RELATIONS: readonly Relation[] = [
  rel('host.resident_VMs', 'VM.resident_on'),
  rel('host.PBDs', 'PBD.host'),
  rel('host.PIFs', 'PIF.host'),
  rel('host.host_CPUs', 'host_cpu.host'),
  rel('VM.VBDs', 'VBD.VM'),
  rel('VM.VIFs', 'VIF.VM'),
  rel('VM.consoles', 'console.VM'),
  rel('VM.snapshots', 'VM.snapshot_of'),
  rel('VM.children', 'VM.parent'),
  rel('VDI.VBDs', 'VBD.VDI'),
  rel('VDI.snapshots', 'VDI.snapshot_of'),
  rel('SR.VDIs', 'VDI.SR'),
  rel('SR.PBDs', 'PBD.SR'),
  rel('network.VIFs', 'VIF.network'),
  rel('network.PIFs', 'PIF.network'),
  rel('PIF.VLAN_slave_of', 'VLAN.tagged_PIF'),
  rel('Bond.slaves', 'PIF.bond_slave_of'),
  rel('PIF.bond_master_of', 'Bond.master'),
  rel('PIF.tunnel_access_PIF_of', 'tunnel.access_PIF'),
  rel('PIF.tunnel_transport_PIF_of', 'tunnel.transport_PIF'),
  rel('task.subtasks', 'task.subtask_of'),
];
