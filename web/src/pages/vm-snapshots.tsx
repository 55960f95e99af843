/** A VM's snapshots (take, revert, delete) and its serial log. */
import { useCallback, useEffect, useState } from 'react';
import type { Ref, VM_record } from '../../../src/client/generated.ts';
import { deleteVm, viaTask } from '../actions.ts';
import { useConsole } from '../context.ts';
import { dateText } from '../format.ts';
import { useTable } from '../live.ts';
import { linkTo } from '../route.ts';

export function VmSnapshots({ vmRef, vm }: { vmRef: Ref<'VM'>; vm: VM_record }) {
  const c = useConsole();
  const vms = useTable(c.store, 'VM');
  const snaps = vm.snapshots.map((r) => [r, vms.get(r)] as const).filter((x): x is readonly [string, VM_record] => x[1] !== undefined)
    .sort((a, b) => b[1].snapshot_time.localeCompare(a[1].snapshot_time));
  const [name, setName] = useState('');
  return (
    <div>
      <form className="inline" aria-label="Take a snapshot" onSubmit={(e) => {
        e.preventDefault();
        void c.run('Snapshot', () => viaTask(c, c.client.async.VM.snapshot(vmRef, name || `${vm.name_label} snapshot`, [])));
        setName('');
      }}>
        <label>Name <input value={name} placeholder={`${vm.name_label} snapshot`} onChange={(e) => setName(e.target.value)} /></label>
        <button type="submit" disabled={!vm.allowed_operations.includes('snapshot')}>Take snapshot</button>
      </form>
      <table>
        <thead><tr><th>Snapshot</th><th>Taken</th><th /></tr></thead>
        <tbody>
          {snaps.map(([ref, s]) => (
            <tr key={ref}>
              <td><a href={linkTo('VM', ref)}>{s.name_label}</a></td>
              <td>{dateText(s.snapshot_time)}</td>
              <td>
                <button className="small" disabled={!s.allowed_operations.includes('revert')} onClick={() => void c.run('Revert', () => viaTask(c, c.client.async.VM.revert(ref)))}>Revert</button>{' '}
                <button className="small" onClick={() => void c.run('New VM from snapshot', () => viaTask(c, c.client.async.VM.clone(ref, `${vm.name_label} from ${s.name_label}`)))}>New VM</button>{' '}
                <button className="small danger" onClick={() => void c.run('Deleting the snapshot', () => deleteVm(c, ref, true))}>Delete</button>
              </td>
            </tr>
          ))}
          {snaps.length === 0 && <tr><td colSpan={3} className="muted">No snapshots.</td></tr>}
        </tbody>
      </table>
    </div>
  );
}

/** What the guest printed on its serial console (GET /console), fetched when asked. */
export function VmLog({ vm }: { vm: VM_record }) {
  const c = useConsole();
  const consoles = useTable(c.store, 'console');
  const serial = vm.consoles.find((r) => consoles.get(r)?.protocol === 'vt100');
  const [text, setText] = useState<string | null>(null);
  const load = useCallback(async () => {
    if (!serial) return setText(null);
    const res = await fetch(`/console?ref=${encodeURIComponent(serial)}&session_id=${encodeURIComponent(c.client.session)}`).catch(() => null);
    setText(res ? await res.text() : 'The server could not be reached.');
  }, [serial, c.client]);
  useEffect(() => void load(), [load]);
  if (!serial) return <p className="muted">The serial log is there while the VM runs.</p>;
  return (
    <div>
      <button onClick={() => void load()}>Refresh</button>
      <pre className="log" tabIndex={0} aria-label="Serial log">{text ?? 'Loading…'}</pre>
    </div>
  );
}
