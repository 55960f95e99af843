/** Storage: every SR with its usage, and an SR's page with its disks and a rescan. */
import type { Ref } from '../../../src/client/generated.ts';
import { viaTask } from '../actions.ts';
import { useConsole } from '../context.ts';
import { byName, bytes } from '../format.ts';
import { useTable } from '../live.ts';
import { linkTo } from '../route.ts';
import { Editable, Properties, UsageBar } from '../widgets.tsx';

export function StoragePage() {
  const { store } = useConsole();
  const srs = useTable(store, 'SR');
  return (
    <article>
      <h1>Storage</h1>
      <table>
        <thead><tr><th>SR</th><th>Type</th><th>Content</th><th>Disks</th><th>Usage</th></tr></thead>
        <tbody>
          {[...srs].sort((a, b) => byName(a[1], b[1])).map(([r, s]) => (
            <tr key={r}>
              <td><a href={linkTo('SR', r)}>{s.name_label}</a></td>
              <td>{s.type}</td>
              <td>{s.content_type}</td>
              <td>{s.VDIs.length}</td>
              <td><UsageBar label={s.name_label} used={s.physical_utilisation} total={s.physical_size} /></td>
            </tr>
          ))}
        </tbody>
      </table>
    </article>
  );
}

export function SrPage({ srRef }: { srRef: Ref<'SR'> }) {
  const c = useConsole();
  const sr = useTable(c.store, 'SR').get(srRef);
  const vdis = useTable(c.store, 'VDI');
  const vbds = useTable(c.store, 'VBD');
  const vms = useTable(c.store, 'VM');
  if (!sr) return <p>This SR no longer exists. <a href="#/storage">All storage</a></p>;
  const disks = sr.VDIs.map((r) => [r, vdis.get(r)] as const).filter((x): x is readonly [string, NonNullable<typeof x[1]>] => x[1] !== undefined)
    .sort((a, b) => byName(a[1], b[1]));
  const usedBy = (vdiVbds: readonly string[]): string => vdiVbds.map((b) => vms.get(vbds.get(b)?.VM ?? '')?.name_label).filter(Boolean).join(', ');
  return (
    <article>
      <h1>{sr.name_label}</h1>
      <Properties rows={[
        ['Name', <Editable label="SR name" value={sr.name_label} save={(v) => c.client.api.SR.set_name_label(srRef, v)} />],
        ['Description', <Editable label="SR description" value={sr.name_description} save={(v) => c.client.api.SR.set_name_description(srRef, v)} />],
        ['Type', `${sr.type} (${sr.content_type || 'user'})`],
        ['Shared', sr.shared ? 'yes' : 'no'],
        ['Size', `${bytes(sr.physical_utilisation)} used of ${bytes(sr.physical_size)}, ${bytes(sr.virtual_allocation)} allocated`],
      ]} />
      <UsageBar label="Usage" used={sr.physical_utilisation} total={sr.physical_size} />
      <p><button disabled={!sr.allowed_operations.includes('scan')} onClick={() => void c.run('Rescanning', () => viaTask(c, c.client.async.SR.scan(srRef)))}>Rescan</button></p>
      <h2>Disks</h2>
      <table>
        <thead><tr><th>Disk</th><th>Size</th><th>Used on disk</th><th>Used by</th><th /></tr></thead>
        <tbody>
          {disks.map(([r, v]) => (
            <tr key={r}>
              <td>{v.name_label}{v.is_a_snapshot ? ' (snapshot)' : ''}</td>
              <td>{bytes(v.virtual_size)}</td>
              <td>{bytes(v.physical_utilisation)}</td>
              <td>{usedBy(v.VBDs) || '—'}</td>
              <td><button className="small danger" disabled={!v.allowed_operations.includes('destroy') || v.VBDs.length > 0}
                onClick={() => void c.run('Deleting the disk', () => viaTask(c, c.client.async.VDI.destroy(r)))}>Delete</button></td>
            </tr>
          ))}
          {disks.length === 0 && <tr><td colSpan={5} className="muted">No disks.</td></tr>}
        </tbody>
      </table>
    </article>
  );
}
