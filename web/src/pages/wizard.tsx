/**
 * The new-VM wizard: template, name, vCPUs, memory, disks on SRs, networks,
 * and how it boots (the template's way, an ISO, or a kernel). It does what
 * XenCenter does: clone the template, write the disk plan into
 * other_config:disks, provision, then make it a VM and add its devices.
 */
import { useMemo, useState, type FormEvent } from 'react';
import type { Ref } from '../../../src/client/generated.ts';
import { partialRecord, viaTask } from '../actions.ts';
import { useConsole, type Console } from '../context.ts';
import { byName } from '../format.ts';
import { useTable } from '../live.ts';
import { go } from '../route.ts';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

interface DiskPlan { sizeGiB: string; sr: string }
type Boot = { kind: 'template' } | { kind: 'iso'; vdi: string } | { kind: 'kernel'; kernel: string; initrd: string; args: string };

export interface VmPlan {
  template: string;
  name: string;
  vcpus: number;
  memoryMiB: number;
  disks: readonly { bytes: number; srUuid: string }[];
  networks: readonly string[];
  boot: Boot;
  start: boolean;
}

const xmlAttr = (s: string): string => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

/** Makes the VM of a plan; returns its ref. */
export async function createVm(c: Console, plan: VmPlan): Promise<Ref<'VM'>> {
  const { api } = c.client;
  const vm = await viaTask(c, c.client.async.VM.clone(plan.template, plan.name));
  const disks = plan.disks.map((d, i) => `<disk device="${i}" size="${d.bytes}" sr="${xmlAttr(d.srUuid)}" bootable="${i === 0}" type="system"/>`).join('');
  await api.VM.remove_from_other_config(vm, 'disks');
  await api.VM.add_to_other_config(vm, 'disks', `<provision>${disks}</provision>`);
  await viaTask(c, c.client.async.VM.provision(vm));
  await api.VM.set_is_a_template(vm, false);
  await api.VM.set_name_description(vm, '');
  const current = await api.VM.get_VCPUs_max(vm);
  if (plan.vcpus >= current) {
    await api.VM.set_VCPUs_max(vm, plan.vcpus);
    await api.VM.set_VCPUs_at_startup(vm, plan.vcpus);
  } else {
    await api.VM.set_VCPUs_at_startup(vm, plan.vcpus);
    await api.VM.set_VCPUs_max(vm, plan.vcpus);
  }
  const mem = plan.memoryMiB * MiB;
  await api.VM.set_memory_limits(vm, Math.min(mem, 256 * MiB), mem, mem, mem);
  for (const [i, network] of plan.networks.entries()) {
    await api.VIF.create(partialRecord<'VIF'>({ VM: vm, network, device: String(i), MAC: '', MTU: c.store.get('network', network)?.MTU ?? 1500 }));
  }
  if (plan.boot.kind === 'iso') {
    await api.VBD.create(partialRecord<'VBD'>({ VM: vm, VDI: plan.boot.vdi, userdevice: String(plan.disks.length + 1), bootable: true, mode: 'RO', type: 'CD', empty: false }));
    await api.VM.set_HVM_boot_params(vm, { ...(await api.VM.get_HVM_boot_params(vm)), order: 'dc' });
  } else if (plan.boot.kind === 'kernel') {
    await api.VM.set_PV_kernel(vm, plan.boot.kernel);
    await api.VM.set_PV_ramdisk(vm, plan.boot.initrd);
    await api.VM.set_PV_args(vm, plan.boot.args);
  }
  if (plan.start) await viaTask(c, c.client.async.VM.start(vm, false, false));
  return vm;
}

export function NewVmWizard() {
  const c = useConsole();
  const vms = useTable(c.store, 'VM');
  const srs = useTable(c.store, 'SR');
  const vdis = useTable(c.store, 'VDI');
  const networks = useTable(c.store, 'network');
  const templates = useMemo(() => [...vms].filter(([, v]) => v.is_a_template && !v.is_a_snapshot).sort((a, b) => byName(a[1], b[1])), [vms]);
  const diskSrs = [...srs].filter(([, s]) => s.content_type !== 'iso' && s.allowed_operations.includes('vdi_create')).sort((a, b) => byName(a[1], b[1]));
  const isos = [...vdis].filter(([, v]) => srs.get(v.SR)?.content_type === 'iso').sort((a, b) => byName(a[1], b[1]));
  const nets = [...networks].sort((a, b) => byName(a[1], b[1]));

  const [template, setTemplate] = useState('');
  const tpl = vms.get(template);
  const [name, setName] = useState('');
  const [vcpus, setVcpus] = useState('');
  const [memory, setMemory] = useState('');
  const [disks, setDisks] = useState<DiskPlan[] | null>(null);
  const [chosenNets, setChosenNets] = useState<string[] | null>(null);
  const [bootKind, setBootKind] = useState<Boot['kind']>('template');
  const [iso, setIso] = useState('');
  const [kernel, setKernel] = useState('');
  const [initrd, setInitrd] = useState('');
  const [args, setArgs] = useState('console=tty0 console=ttyS0');
  const [start, setStart] = useState(true);
  const [busy, setBusy] = useState(false);

  // defaults follow the template until the user changes them
  const plannedDisks = disks ?? (tpl ? [...(tpl.other_config.disks ?? '').matchAll(/size="(\d+)"/g)].map((m) => ({ sizeGiB: String(Number(m[1]) / GiB), sr: '' })) : []);
  const plannedNets = chosenNets ?? (nets[0] ? [nets[0][0]] : []);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!tpl) return;
    setBusy(true);
    const defaultSr = diskSrs[0]?.[1].uuid ?? '';
    const boot: Boot = bootKind === 'iso' ? { kind: 'iso', vdi: iso || isos[0]?.[0] || '' } : bootKind === 'kernel' ? { kind: 'kernel', kernel, initrd, args } : { kind: 'template' };
    const vm = await c.run('Creating the VM', () => createVm(c, {
      template, name: name || `New VM from ${tpl.name_label}`,
      vcpus: Number(vcpus || tpl.VCPUs_max), memoryMiB: Number(memory || tpl.memory_static_max / MiB),
      disks: plannedDisks.map((d) => ({ bytes: Math.round(Number(d.sizeGiB) * GiB), srUuid: d.sr ? srs.get(d.sr)?.uuid ?? defaultSr : defaultSr })),
      networks: plannedNets, boot, start,
    }));
    setBusy(false);
    if (vm) go('VM', vm, start ? 'console' : 'general');
  }

  return (
    <article>
      <h1>New VM</h1>
      <form className="wizard" onSubmit={submit} aria-label="New VM">
        <fieldset>
          <legend>1. Template</legend>
          <select aria-label="Template" value={template} onChange={(e) => { setTemplate(e.target.value); setDisks(null); }} required>
            <option value="">Choose a template…</option>
            {templates.map(([r, t]) => <option key={r} value={r}>{t.name_label}</option>)}
          </select>
          {tpl && <p className="muted">{tpl.name_description}</p>}
        </fieldset>
        <fieldset disabled={!tpl}>
          <legend>2. Name and size</legend>
          <label>Name <input aria-label="Name" value={name} onChange={(e) => setName(e.target.value)} placeholder={tpl ? `New VM from ${tpl.name_label}` : ''} /></label>
          <label>vCPUs <input aria-label="vCPUs" type="number" min="1" max="64" value={vcpus} placeholder={tpl ? String(tpl.VCPUs_max) : ''} onChange={(e) => setVcpus(e.target.value)} /></label>
          <label>Memory (MiB) <input aria-label="Memory (MiB)" type="number" min="16" value={memory} placeholder={tpl ? String(tpl.memory_static_max / MiB) : ''} onChange={(e) => setMemory(e.target.value)} /></label>
        </fieldset>
        <fieldset disabled={!tpl}>
          <legend>3. Disks</legend>
          {plannedDisks.map((d, i) => (
            <div key={i} className="row">
              <label>Disk {i} size (GiB) <input type="number" min="0.01" step="any" value={d.sizeGiB} onChange={(e) => setDisks(plannedDisks.map((x, j) => (j === i ? { ...x, sizeGiB: e.target.value } : x)))} required /></label>
              <label>on <select value={d.sr} onChange={(e) => setDisks(plannedDisks.map((x, j) => (j === i ? { ...x, sr: e.target.value } : x)))}>
                {diskSrs.map(([r, s]) => <option key={r} value={r}>{s.name_label}</option>)}
              </select></label>
              <button type="button" className="small" onClick={() => setDisks(plannedDisks.filter((_, j) => j !== i))}>Remove</button>
            </div>
          ))}
          <button type="button" className="small" onClick={() => setDisks([...plannedDisks, { sizeGiB: '8', sr: '' }])}>Add a disk</button>
        </fieldset>
        <fieldset disabled={!tpl}>
          <legend>4. Networks</legend>
          {nets.map(([r, n]) => (
            <label key={r} className="check"><input type="checkbox" checked={plannedNets.includes(r)}
              onChange={(e) => setChosenNets(e.target.checked ? [...plannedNets, r] : plannedNets.filter((x) => x !== r))} /> {n.name_label}</label>
          ))}
          {nets.length === 0 && <p className="muted">No networks.</p>}
        </fieldset>
        <fieldset disabled={!tpl}>
          <legend>5. Boot</legend>
          <label className="check"><input type="radio" name="boot" checked={bootKind === 'template'} onChange={() => setBootKind('template')} /> As the template says</label>
          <label className="check"><input type="radio" name="boot" checked={bootKind === 'iso'} disabled={isos.length === 0} onChange={() => setBootKind('iso')} /> From an ISO</label>
          {bootKind === 'iso' && <select aria-label="ISO" value={iso} onChange={(e) => setIso(e.target.value)}>{isos.map(([r, v]) => <option key={r} value={r}>{v.name_label}</option>)}</select>}
          <label className="check"><input type="radio" name="boot" checked={bootKind === 'kernel'} onChange={() => setBootKind('kernel')} /> From a kernel on the host</label>
          {bootKind === 'kernel' && (
            <div className="column">
              <label>Kernel <input aria-label="Kernel" value={kernel} onChange={(e) => setKernel(e.target.value)} required /></label>
              <label>Initrd <input aria-label="Initrd" value={initrd} onChange={(e) => setInitrd(e.target.value)} /></label>
              <label>Arguments <input aria-label="Kernel arguments" value={args} onChange={(e) => setArgs(e.target.value)} /></label>
            </div>
          )}
        </fieldset>
        <label className="check"><input type="checkbox" checked={start} onChange={(e) => setStart(e.target.checked)} /> Start it when created</label>
        <button type="submit" className="primary" disabled={!tpl || busy}>{busy ? 'Creating…' : 'Create VM'}</button>
      </form>
    </article>
  );
}
