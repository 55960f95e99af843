/** The resource tree: pool → hosts → their VMs, halted VMs, templates, storage, networks; with a search box. */
import { memo, useDeferredValue, useMemo, useState } from 'react';
import type { VM_record } from '../../src/client/generated.ts';
import { useConsole } from './context.ts';
import { byName, isNull } from './format.ts';
import { useTable } from './live.ts';
import { linkTo } from './route.ts';

const POWER_ICONS: Record<string, string> = { Running: '▶', Halted: '■', Paused: '❚❚', Suspended: '☾' };

export function PowerIcon({ state }: { state: string }) {
  return <span className={`power ${state.toLowerCase()}`} role="img" aria-label={state} title={state}>{POWER_ICONS[state] ?? '?'}</span>;
}

interface Item {
  readonly ref: string;
  readonly cls: string;
  readonly label: string;
  readonly power?: string;
}

const Leaf = memo(function Leaf({ item, selected }: { item: Item; selected: boolean }) {
  return (
    <li>
      <a href={linkTo(item.cls, item.ref)} aria-current={selected ? 'page' : undefined} className={selected ? 'selected' : ''}>
        {item.power && <PowerIcon state={item.power} />} {item.label}
      </a>
    </li>
  );
});

function Group({ title, items, selected, open: initiallyOpen = true, href }: { title: string; items: readonly Item[]; selected: string; open?: boolean; href?: string }) {
  return (
    <details open={initiallyOpen}>
      <summary>{href ? <a href={href}>{title}</a> : title} <span className="count">{items.length}</span></summary>
      <ul>
        {items.map((i) => <Leaf key={i.ref} item={i} selected={isSelected(selected, i.cls, i.ref)} />)}
      </ul>
    </details>
  );
}

/** The route names this object (any of its tabs). */
const isSelected = (route: string, cls: string, ref: string): boolean => route === `/${cls}/${ref}` || route.startsWith(`/${cls}/${ref}/`);

const vmItem = (ref: string, vm: VM_record): Item => ({ ref, cls: 'VM', label: vm.name_label, power: vm.power_state });

export function Tree({ selected }: { selected: string }) {
  const { store } = useConsole();
  const vms = useTable(store, 'VM');
  const hosts = useTable(store, 'host');
  const pools = useTable(store, 'pool');
  const srs = useTable(store, 'SR');
  const networks = useTable(store, 'network');
  const [search, setSearch] = useState('');
  const query = useDeferredValue(search.trim().toLowerCase());

  const tree = useMemo(() => {
    const match = (label: string): boolean => !query || label.toLowerCase().includes(query);
    const guests = [...vms].filter(([, v]) => !v.is_a_template && !v.is_a_snapshot && !v.is_control_domain && match(v.name_label)).sort((a, b) => byName(a[1], b[1]));
    const onHost = new Map<string, Item[]>();
    const elsewhere: Item[] = [];
    for (const [ref, vm] of guests) {
      if (vm.power_state !== 'Halted' && !isNull(vm.resident_on)) {
        const list = onHost.get(vm.resident_on) ?? [];
        list.push(vmItem(ref, vm));
        onHost.set(vm.resident_on, list);
      } else elsewhere.push(vmItem(ref, vm));
    }
    const templates = [...vms].filter(([, v]) => v.is_a_template && !v.is_a_snapshot && match(v.name_label)).sort((a, b) => byName(a[1], b[1])).map(([r, v]) => ({ ref: r, cls: 'VM', label: v.name_label }));
    return {
      hosts: [...hosts].sort((a, b) => byName(a[1], b[1])).map(([ref, h]) => ({ ref, label: h.name_label, vms: onHost.get(ref) ?? [] })),
      elsewhere,
      templates,
      srs: [...srs].filter(([, s]) => match(s.name_label)).sort((a, b) => byName(a[1], b[1])).map(([r, s]) => ({ ref: r, cls: 'SR', label: s.name_label })),
      networks: [...networks].filter(([, n]) => match(n.name_label)).sort((a, b) => byName(a[1], b[1])).map(([r, n]) => ({ ref: r, cls: 'network', label: n.name_label })),
    };
  }, [vms, hosts, srs, networks, query]);

  const [poolRef, pool] = [...pools][0] ?? ['', undefined];
  return (
    <div className="tree-inner">
      <input type="search" placeholder="Search" aria-label="Search the resource tree" value={search} onChange={(e) => setSearch(e.target.value)} />
      <details open>
        <summary><a href={poolRef ? linkTo('pool', poolRef) : '#/'} className={selected === `/pool/${poolRef}` ? 'selected' : ''}>{pool?.name_label || 'Pool'}</a></summary>
        {tree.hosts.map((h) => (
          <Group key={h.ref} title={h.label} href={linkTo('host', h.ref)} items={h.vms} selected={selected} />
        ))}
        <Group title="Halted and suspended VMs" items={tree.elsewhere} selected={selected} />
        <Group title="Templates" items={tree.templates} selected={selected} open={query !== ''} />
        <Group title="Storage" href="#/storage" items={tree.srs} selected={selected} />
        <Group title="Networks" href="#/networks" items={tree.networks} selected={selected} />
      </details>
    </div>
  );
}
