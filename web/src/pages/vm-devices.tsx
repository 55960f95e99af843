/** A VM's disks and network interfaces: listed live, added and removed. */
import { useState, type FormEvent } from 'react';
import type { Ref, VM_record } from '../../../src/client/generated.ts';
import { partialRecord, viaTask } from '../actions.ts';
import { useConsole } from '../context.ts';
import { byName, bytes, isNull } from '../format.ts';
import { useTable } from '../live.ts';
import { RefLink } from '../widgets.tsx';

const GiB = 1024 ** 3;

/** The lowest userdevice number not taken. */
function freeDevice(taken: readonly string[]): string {
  for (let i = 0; ; i++) if (!taken.includes(String(i))) return String(i);
}

export function VmDisks({ vmRef, vm }: { vmRef: Ref<'VM'>; vm: VM_record }) {
  const c = useConsole();
  const vbds = useTable(c.store, 'VBD');
  const vdis = useTable(c.store, 'VDI');
  const srs = useTable(c.store, 'SR');
  const [size, setSize] = useState('1');
  const writable = [...srs].filter(([, s]) => s.content_type !== 'iso' && s.allowed_operations.includes('vdi_create')).sort((a, b) => byName(a[1], b[1]));
  const [sr, setSr] = useState('');
  const isos = [...vdis].filter(([, v]) => srs.get(v.SR)?.content_type === 'iso').sort((a, b) => byName(a[1], b[1]));
  const mine = vm.VBDs.map((r) => [r, vbds.get(r)] as const).filter((x): x is readonly [string, NonNullable<typeof x[1]>] => x[1] !== undefined);

  async function add(e: FormEvent) {
    e.preventDefault();
    const target = sr || writable[0]?.[0];
    if (!target) return;
    await c.run('Adding a disk', async () => {
      const vdi = await c.client.api.VDI.create(partialRecord<'VDI'>({ SR: target, virtual_size: Math.round(Number(size) * GiB), name_label: `${vm.name_label} disk`, type: 'user', sharable: false, read_only: false }));
      await c.client.api.VBD.create(partialRecord<'VBD'>({ VM: vmRef, VDI: vdi, userdevice: freeDevice(mine.map(([, b]) => b.userdevice)), bootable: mine.length === 0, mode: 'RW', type: 'Disk', empty: false }));
    });
  }

  async function remove(vbd: string, vdi: string, destroyDisk: boolean) {
    await c.run('Removing the disk', async () => {
      await c.client.api.VBD.destroy(vbd);
      if (destroyDisk && !isNull(vdi)) await viaTask(c, c.client.async.VDI.destroy(vdi));
    });
  }

  return (
    <div>
      <table>
        <thead><tr><th>Device</th><th>Disk</th><th>Size</th><th>SR</th><th>Mode</th><th /></tr></thead>
        <tbody>
          {mine.map(([ref, b]) => {
            const vdi = vdis.get(b.VDI);
            return (
              <tr key={ref}>
                <td>{b.userdevice}{b.type === 'CD' ? ' (CD)' : ''}</td>
                <td>{vdi ? vdi.name_label : b.empty ? <em>empty</em> : '—'}</td>
                <td>{vdi ? bytes(vdi.virtual_size) : ''}</td>
                <td>{vdi ? <RefLink cls="SR" refId={vdi.SR}>{srs.get(vdi.SR)?.name_label ?? ''}</RefLink> : ''}</td>
                <td>{b.mode}</td>
                <td>
                  {b.type === 'CD' ? (
                    b.empty ? (
                      <select aria-label="Insert an ISO" value="" onChange={(e) => void c.run('Inserting the ISO', () => c.client.api.VBD.insert(ref, e.target.value))}>
                        <option value="">Insert…</option>
                        {isos.map(([r, v]) => <option key={r} value={r}>{v.name_label}</option>)}
                      </select>
                    ) : <button className="small" onClick={() => void c.run('Ejecting', () => c.client.api.VBD.eject(ref))}>Eject</button>
                  ) : (
                    <>
                      <button className="small" disabled={vm.power_state !== 'Halted'} onClick={() => void remove(ref, b.VDI, false)}>Detach</button>{' '}
                      <button className="small danger" disabled={vm.power_state !== 'Halted'} onClick={() => void remove(ref, b.VDI, true)}>Delete</button>
                    </>
                  )}
                </td>
              </tr>
            );
          })}
          {mine.length === 0 && <tr><td colSpan={6} className="muted">No disks.</td></tr>}
        </tbody>
      </table>
      {!vm.is_a_snapshot && (
        <form className="inline" onSubmit={add} aria-label="Add a disk">
          <label>Size (GiB) <input type="number" min="0.01" step="any" value={size} onChange={(e) => setSize(e.target.value)} required /></label>
          <label>SR <select value={sr} onChange={(e) => setSr(e.target.value)}>{writable.map(([r, s]) => <option key={r} value={r}>{s.name_label}</option>)}</select></label>
          <button type="submit" disabled={writable.length === 0}>Add disk</button>
        </form>
      )}
    </div>
  );
}

export function VmNics({ vmRef, vm }: { vmRef: Ref<'VM'>; vm: VM_record }) {
  const c = useConsole();
  const vifs = useTable(c.store, 'VIF');
  const networks = useTable(c.store, 'network');
  const guest = useTable(c.store, 'VM_guest_metrics').get(vm.guest_metrics);
  const [net, setNet] = useState('');
  const choices = [...networks].sort((a, b) => byName(a[1], b[1]));
  const mine = vm.VIFs.map((r) => [r, vifs.get(r)] as const).filter((x): x is readonly [string, NonNullable<typeof x[1]>] => x[1] !== undefined);

  async function add(e: FormEvent) {
    e.preventDefault();
    const network = net || choices[0]?.[0];
    if (!network) return;
    await c.run('Adding a network interface', () =>
      c.client.api.VIF.create(partialRecord<'VIF'>({ VM: vmRef, network, device: freeDevice(mine.map(([, v]) => v.device)), MAC: '', MTU: networks.get(network)?.MTU ?? 1500 })));
  }

  return (
    <div>
      <table>
        <thead><tr><th>Device</th><th>Network</th><th>MAC</th><th>IP</th><th>Attached</th><th /></tr></thead>
        <tbody>
          {mine.map(([ref, v]) => (
            <tr key={ref}>
              <td>{v.device}</td>
              <td><RefLink cls="network" refId={v.network}>{networks.get(v.network)?.name_label ?? ''}</RefLink></td>
              <td><code>{v.MAC}</code></td>
              <td>{guest?.networks[`${v.device}/ip`] ?? '—'}</td>
              <td>{v.currently_attached ? 'yes' : 'no'}</td>
              <td><button className="small danger" onClick={() => void c.run('Removing the interface', async () => {
                if (v.currently_attached) await c.client.api.VIF.unplug(ref);
                await c.client.api.VIF.destroy(ref);
              })}>Remove</button></td>
            </tr>
          ))}
          {mine.length === 0 && <tr><td colSpan={6} className="muted">No network interfaces.</td></tr>}
        </tbody>
      </table>
      {!vm.is_a_snapshot && (
        <form className="inline" onSubmit={add} aria-label="Add a network interface">
          <label>Network <select value={net} onChange={(e) => setNet(e.target.value)}>{choices.map(([r, n]) => <option key={r} value={r}>{n.name_label}</option>)}</select></label>
          <button type="submit" disabled={choices.length === 0}>Add interface</button>
        </form>
      )}
    </div>
  );
}
