/** The pool's overview and a host's page, with usage bars. */
import type { Ref } from '../../../src/client/generated.ts';
import { useConsole } from '../context.ts';
import { byName, isNull } from '../format.ts';
import { useTable } from '../live.ts';
import { linkTo } from '../route.ts';
import { PowerIcon } from '../tree.tsx';
import { Editable, Properties, UsageBar } from '../widgets.tsx';

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
