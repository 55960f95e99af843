/** The pool's overview and a host's page, with usage bars. */
import { useState, type FormEvent } from 'react';
import type { Ref } from '../../../src/client/generated.ts';
import { useConsole } from '../context.ts';
import { byName, isNull } from '../format.ts';
import { useTable } from '../live.ts';
import { linkTo } from '../route.ts';
import { PowerIcon } from '../tree.tsx';
import { Editable, Properties, UsageBar } from '../widgets.tsx';

/** Uploads an XVA to PUT /import with a task of ours, whose progress the tasks panel shows. */
function ImportVm() {
  const c = useConsole();
  const srs = useTable(c.store, 'SR');
  const targets = [...srs].filter(([, s]) => s.content_type !== 'iso' && s.allowed_operations.includes('vdi_create')).sort((a, b) => byName(a[1], b[1]));
  const [sr, setSr] = useState('');
  const [file, setFile] = useState<File | null>(null);
  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!file) return;
    await c.run('Importing', async () => {
      const task = await c.client.api.task.create(`Import ${file.name}`, '');
      const q = new URLSearchParams({ session_id: c.client.session, task_id: task, sr_id: sr || targets[0]?.[0] || '' });
      const done = c.store.waitTask(task);
      const res = await fetch(`/import?${q}`, { method: 'PUT', body: file });
      if (!res.ok) throw new Error(`import refused: ${res.status} ${(await res.text()).trim()}`);
      await done;
    });
  }
  return (
    <form className="inline" onSubmit={submit} aria-label="Import a VM">
      <label>Import a VM (XVA) <input type="file" accept=".xva" onChange={(e) => setFile(e.target.files?.[0] ?? null)} required /></label>
      <label>to <select value={sr} onChange={(e) => setSr(e.target.value)}>{targets.map(([r, s]) => <option key={r} value={r}>{s.name_label}</option>)}</select></label>
      <button type="submit" disabled={!file}>Import</button>
    </form>
  );
}

function HostUsage({ hostRef }: { hostRef: string }) {
  const { store } = useConsole();
  const host = useTable(store, 'host').get(hostRef);
  const metrics = useTable(store, 'host_metrics').get(host?.metrics ?? '');
  if (!metrics) return null;
  return <UsageBar label="Memory" used={metrics.memory_total - metrics.memory_free} total={metrics.memory_total} />;
}

export function PoolPage() {
  const { store, client } = useConsole();
  const pools = useTable(store, 'pool');
  const hosts = useTable(store, 'host');
  const vms = useTable(store, 'VM');
  const [ref, pool] = [...pools][0] ?? ['', undefined];
  const guests = [...vms.values()].filter((v) => !v.is_a_template && !v.is_control_domain);
  const running = guests.filter((v) => v.power_state === 'Running').length;
  return (
    <article>
      <h1>{pool?.name_label || 'Pool'}</h1>
      {pool && (
        <Properties rows={[
          ['Name', <Editable label="pool name" value={pool.name_label} save={(v) => client.api.pool.set_name_label(ref, v)} />],
          ['Description', <Editable label="pool description" value={pool.name_description} save={(v) => client.api.pool.set_name_description(ref, v)} />],
          ['Coordinator', hosts.get(pool.master)?.name_label ?? '—'],
          ['VMs', `${guests.length} (${running} running)`],
        ]} />
      )}
      <ImportVm />
      <h2>Hosts</h2>
      <ul className="cards">
        {[...hosts].sort((a, b) => byName(a[1], b[1])).map(([hr, h]) => (
          <li key={hr}>
            <a href={linkTo('host', hr)}>{h.name_label}</a> <span className="muted">{h.address}</span> {h.enabled ? '' : <span className="tag">disabled</span>}
            <HostUsage hostRef={hr} />
          </li>
        ))}
      </ul>
    </article>
  );
}

export function HostPage({ hostRef }: { hostRef: Ref<'host'> }) {
  const { store, client } = useConsole();
  const host = useTable(store, 'host').get(hostRef);
  const vms = useTable(store, 'VM');
  if (!host) return <p>This host is not in the pool. <a href="#/">Back</a></p>;
  const resident = [...vms].filter(([, v]) => v.resident_on === hostRef && !v.is_control_domain).sort((a, b) => byName(a[1], b[1]));
  return (
    <article>
      <h1>{host.name_label}</h1>
      <Properties rows={[
        ['Name', <Editable label="host name" value={host.name_label} save={(v) => client.api.host.set_name_label(hostRef, v)} />],
        ['Description', <Editable label="host description" value={host.name_description} save={(v) => client.api.host.set_name_description(hostRef, v)} />],
        ['Address', host.address],
        ['Enabled', host.enabled ? 'yes' : 'no'],
        ['CPUs', host.cpu_info.cpu_count ?? '—'],
        ['Software', `${host.software_version.product_brand ?? 'Xenon'} ${host.software_version.product_version ?? ''}`],
        ['Control domain', isNull(host.control_domain) ? '—' : vms.get(host.control_domain)?.name_label ?? '—'],
      ]} />
      <HostUsage hostRef={hostRef} />
      <h2>VMs on this host</h2>
      <ul>{resident.map(([r, v]) => <li key={r}><PowerIcon state={v.power_state} /> <a href={linkTo('VM', r)}>{v.name_label}</a></li>)}</ul>
      {resident.length === 0 && <p className="muted">None.</p>}
    </article>
  );
}
