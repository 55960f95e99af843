/** A VM's page: lifecycle buttons that follow allowed_operations, and tabs for its properties and devices. */
import { lazy, Suspense, useState } from 'react';
import type { Ref, VM_record } from '../../../src/client/generated.ts';
import { deleteVm, viaTask, vmOperation, VM_BUTTONS } from '../actions.ts';
import { useConsole } from '../context.ts';
import { bytes, isNull, OPERATION_LABELS } from '../format.ts';
import { useTable } from '../live.ts';
import { go } from '../route.ts';
import { PowerIcon } from '../tree.tsx';
import { Editable, Properties, RefLink, Tabs } from '../widgets.tsx';
import { VmDisks, VmNics } from './vm-devices.tsx';
import { VmLog, VmSnapshots } from './vm-snapshots.tsx';

// noVNC, xterm and uPlot are most of the code: loaded when their tab is first opened
const ConsoleView = lazy(() => import('../console.tsx').then((m) => ({ default: m.ConsoleView })));
const VmGraphs = lazy(() => import('../graphs.tsx').then((m) => ({ default: m.VmGraphs })));

const TABS = [
  { id: 'general', title: 'General' },
  { id: 'storage', title: 'Storage' },
  { id: 'network', title: 'Networking' },
  { id: 'snapshots', title: 'Snapshots' },
  { id: 'performance', title: 'Performance' },
  { id: 'console', title: 'Console' },
  { id: 'logs', title: 'Logs' },
];

function Lifecycle({ vmRef, vm }: { vmRef: Ref<'VM'>; vm: VM_record }) {
  const c = useConsole();
  const allowed = new Set<string>(vm.allowed_operations);
  const busy = Object.values(vm.current_operations);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const hosts = useTable(c.store, 'host');
  const others = [...hosts].filter(([r]) => r !== vm.resident_on);
  const [withDisks, setWithDisks] = useState(true);
  const act = (label: string, f: () => Promise<unknown>) => () => void c.run(label, f);
  const buttons = vm.is_a_template ? [] : VM_BUTTONS.filter((op) => allowed.has(op) || op === 'start' || op === 'clean_shutdown');
  return (
    <div className="actions" role="toolbar" aria-label="VM actions">
      {buttons.map((op) => (
        <button key={op} disabled={!allowed.has(op)} title={allowed.has(op) ? undefined : `Not allowed now (${vm.power_state})`}
          onClick={act(OPERATION_LABELS[op], () => vmOperation(c, vmRef, op))}>{OPERATION_LABELS[op]}</button>
      ))}
      <button disabled={!allowed.has('snapshot')} onClick={act('Snapshot', () => viaTask(c, c.client.async.VM.snapshot(vmRef, `${vm.name_label} snapshot ${new Date().toISOString().slice(0, 19).replace('T', ' ')}`, [])))}>Take snapshot</button>
      <button disabled={!allowed.has('clone')} onClick={act('Clone', async () => go('VM', await viaTask(c, c.client.async.VM.clone(vmRef, `${vm.name_label} (clone)`))))}>Clone</button>
      <button disabled={!allowed.has('copy')} onClick={act('Copy', async () => go('VM', await viaTask(c, c.client.async.VM.copy(vmRef, `${vm.name_label} (copy)`, 'OpaqueRef:NULL'))))}>Copy</button>
      <a className={`button ${allowed.has('export') ? '' : 'disabled'}`} aria-disabled={!allowed.has('export')}
        href={allowed.has('export') ? `/export?ref=${encodeURIComponent(vmRef)}&session_id=${encodeURIComponent(c.client.session)}` : undefined} download={`${vm.name_label}.xva`}>Export</a>
      {others.length > 0 && allowed.has('pool_migrate') && (
        <select aria-label="Migrate to host" value="" onChange={(e) => void c.run('Migrate', () => viaTask(c, c.client.async.VM.pool_migrate(vmRef, e.target.value, {})))}>
          <option value="">Migrate to…</option>
          {others.map(([r, h]) => <option key={r} value={r}>{h.name_label}</option>)}
        </select>
      )}
      <button className="danger" disabled={!allowed.has('destroy')} onClick={() => setConfirmDelete(true)}>Delete</button>
      {busy.length > 0 && <span className="busy" role="status">{busy.join(', ')}…</span>}
      {confirmDelete && (
        <div className="confirm" role="dialog" aria-label="Delete the VM">
          <p>Delete {vm.name_label}?</p>
          <label><input type="checkbox" checked={withDisks} onChange={(e) => setWithDisks(e.target.checked)} /> also delete its disks and snapshots</label>
          <button className="danger" onClick={act('Delete', async () => { await deleteVm(c, vmRef, withDisks); go(''); })}>Delete</button>
          <button onClick={() => setConfirmDelete(false)}>Cancel</button>
        </div>
      )}
    </div>
  );
}

function General({ vmRef, vm }: { vmRef: Ref<'VM'>; vm: VM_record }) {
  const c = useConsole();
  const { api } = c.client;
  const hosts = useTable(c.store, 'host');
  const guest = useTable(c.store, 'VM_guest_metrics').get(vm.guest_metrics);
  const halted = vm.power_state === 'Halted';
  const MiB = 1024 * 1024;
  return (
    <Properties rows={[
      ['Name', <Editable label="name" value={vm.name_label} save={(v) => api.VM.set_name_label(vmRef, v)} />],
      ['Description', <Editable label="description" value={vm.name_description} save={(v) => api.VM.set_name_description(vmRef, v)} />],
      ['UUID', <code>{vm.uuid}</code>],
      ['Power state', <><PowerIcon state={vm.power_state} /> {vm.power_state}</>],
      ['Host', isNull(vm.resident_on) ? '—' : <RefLink cls="host" refId={vm.resident_on}>{hosts.get(vm.resident_on)?.name_label ?? vm.resident_on}</RefLink>],
      ['vCPUs', halted && !vm.is_a_snapshot
        ? <Editable label="vCPUs" value={String(vm.VCPUs_max)} save={async (v) => {
          const n = Number(v);
          if (n >= vm.VCPUs_max) { await api.VM.set_VCPUs_max(vmRef, n); await api.VM.set_VCPUs_at_startup(vmRef, n); } else { await api.VM.set_VCPUs_at_startup(vmRef, n); await api.VM.set_VCPUs_max(vmRef, n); }
        }} />
        : String(vm.VCPUs_at_startup)],
      ['Memory', halted && !vm.is_a_snapshot
        ? <Editable label="memory (MiB)" value={String(Math.round(vm.memory_static_max / MiB))} save={(v) => {
          const b = Number(v) * MiB;
          return api.VM.set_memory_limits(vmRef, Math.min(vm.memory_static_min, b), b, b, b);
        }} />
        : bytes(vm.memory_static_max)],
      ['Boot', vm.PV_kernel ? `kernel ${vm.PV_kernel}` : `BIOS order ${vm.HVM_boot_params.order ?? ''}`],
      ['Operating system', guest?.os_version.name ?? '—'],
      ['IP addresses', guest ? Object.values(guest.networks).join(', ') || '—' : '—'],
    ]} />
  );
}

export function VmPage({ vmRef, tab }: { vmRef: Ref<'VM'>; tab: string }) {
  const { store } = useConsole();
  const vm = useTable(store, 'VM').get(vmRef);
  if (!vm) return <p>This VM no longer exists. <a href="#/">Back to the pool</a></p>;
  const current = TABS.some((t) => t.id === tab) ? tab : 'general';
  return (
    <article className="vm">
      <h1><PowerIcon state={vm.power_state} /> {vm.name_label} {vm.is_a_template && <span className="tag">{vm.is_a_snapshot ? 'snapshot' : 'template'}</span>}</h1>
      <Lifecycle vmRef={vmRef} vm={vm} />
      <Tabs base={['VM', vmRef]} tabs={TABS} current={current} />
      <section role="tabpanel" aria-label={current}>
        {current === 'general' && <General vmRef={vmRef} vm={vm} />}
        {current === 'storage' && <VmDisks vmRef={vmRef} vm={vm} />}
        {current === 'network' && <VmNics vmRef={vmRef} vm={vm} />}
        {current === 'snapshots' && <VmSnapshots vmRef={vmRef} vm={vm} />}
        <Suspense fallback={<p className="muted">Loading…</p>}>
          {current === 'performance' && <VmGraphs vm={vm} />}
          {current === 'console' && <ConsoleView vm={vm} />}
        </Suspense>
        {current === 'logs' && <VmLog vm={vm} />}
      </section>
    </article>
  );
}
