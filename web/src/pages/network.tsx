/** Networks: their bridges, PIFs (with VLANs) and the VIFs on them. */
import { useState, type FormEvent } from 'react';
import type { Ref } from '../../../src/client/generated.ts';
import { partialRecord } from '../actions.ts';
import { useConsole } from '../context.ts';
import { byName } from '../format.ts';
import { useTable } from '../live.ts';
import { go, linkTo } from '../route.ts';
import { Editable, Properties } from '../widgets.tsx';

export function NetworksPage() {
  const c = useConsole();
  const networks = useTable(c.store, 'network');
  const pifs = useTable(c.store, 'PIF');
  const [name, setName] = useState('');
  async function create(e: FormEvent) {
    e.preventDefault();
    const ref = await c.run('Creating the network', () => c.client.api.network.create(partialRecord<'network'>({ name_label: name, name_description: '', MTU: 1500 })));
    if (ref) go('network', ref);
  }
  return (
    <article>
      <h1>Networks</h1>
      <table>
        <thead><tr><th>Network</th><th>Bridge</th><th>MTU</th><th>PIFs</th><th>VIFs</th></tr></thead>
        <tbody>
          {[...networks].sort((a, b) => byName(a[1], b[1])).map(([r, n]) => (
            <tr key={r}>
              <td><a href={linkTo('network', r)}>{n.name_label}</a></td>
              <td><code>{n.bridge}</code></td>
              <td>{n.MTU}</td>
              <td>{n.PIFs.map((p) => { const pif = pifs.get(p); return pif ? `${pif.device}${pif.VLAN >= 0 ? `.${pif.VLAN}` : ''}` : ''; }).join(', ') || '—'}</td>
              <td>{n.VIFs.length}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="inline" onSubmit={create} aria-label="New network">
        <label>Name <input value={name} onChange={(e) => setName(e.target.value)} required /></label>
        <button type="submit">Create a host-internal network</button>
      </form>
    </article>
  );
}

export function NetworkPage({ netRef }: { netRef: Ref<'network'> }) {
  const c = useConsole();
  const net = useTable(c.store, 'network').get(netRef);
  const pifs = useTable(c.store, 'PIF');
  const vifs = useTable(c.store, 'VIF');
  const vms = useTable(c.store, 'VM');
  const hosts = useTable(c.store, 'host');
  const [tag, setTag] = useState('');
  const [base, setBase] = useState('');
  if (!net) return <p>This network no longer exists. <a href="#/networks">All networks</a></p>;
  const physical = [...pifs].filter(([, p]) => p.physical).sort((a, b) => a[1].device.localeCompare(b[1].device));
  async function addVlan(e: FormEvent) {
    e.preventDefault();
    const pif = base || physical[0]?.[0];
    if (!pif) return;
    await c.run('Creating the VLAN', () => c.client.api.VLAN.create(pif, Number(tag), netRef));
  }
  return (
    <article>
      <h1>{net.name_label}</h1>
      <Properties rows={[
        ['Name', <Editable label="network name" value={net.name_label} save={(v) => c.client.api.network.set_name_label(netRef, v)} />],
        ['Description', <Editable label="network description" value={net.name_description} save={(v) => c.client.api.network.set_name_description(netRef, v)} />],
        ['Bridge', <code>{net.bridge}</code>],
        ['MTU', String(net.MTU)],
      ]} />
      <h2>PIFs</h2>
      <table>
        <thead><tr><th>Device</th><th>Host</th><th>VLAN</th><th>Address</th><th>Attached</th></tr></thead>
        <tbody>
          {net.PIFs.map((r) => pifs.get(r) && (
            <tr key={r}>
              <td>{pifs.get(r)!.device}</td>
              <td>{hosts.get(pifs.get(r)!.host)?.name_label}</td>
              <td>{pifs.get(r)!.VLAN >= 0 ? pifs.get(r)!.VLAN : '—'}</td>
              <td>{pifs.get(r)!.IP || pifs.get(r)!.ip_configuration_mode}</td>
              <td>{pifs.get(r)!.currently_attached ? 'yes' : 'no'}</td>
            </tr>
          ))}
          {net.PIFs.length === 0 && <tr><td colSpan={5} className="muted">No PIFs: a host-internal network.</td></tr>}
        </tbody>
      </table>
      {net.PIFs.length === 0 && physical.length > 0 && (
        <form className="inline" onSubmit={addVlan} aria-label="Make this network a VLAN">
          <label>VLAN tag <input type="number" min="1" max="4094" value={tag} onChange={(e) => setTag(e.target.value)} required /></label>
          <label>on <select value={base} onChange={(e) => setBase(e.target.value)}>{physical.map(([r, p]) => <option key={r} value={r}>{p.device}</option>)}</select></label>
          <button type="submit">Create VLAN</button>
        </form>
      )}
      <h2>VIFs</h2>
      <ul>
        {net.VIFs.map((r) => { const v = vifs.get(r); const vm = v && vms.get(v.VM); return v && vm ? <li key={r}><a href={linkTo('VM', v.VM, 'network')}>{vm.name_label}</a> — device {v.device}, <code>{v.MAC}</code></li> : null; })}
      </ul>
      {net.VIFs.length === 0 && <p className="muted">No VIFs.</p>}
    </article>
  );
}
