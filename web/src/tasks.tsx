/** Every task the session can see: running ones with progress bars, finished ones with their outcome (errors with xapi's code). */
import { useMemo, useState } from 'react';
import type { task_record } from '../../src/client/generated.ts';
import { useConsole } from './context.ts';
import { useTable } from './live.ts';

function outcome(t: task_record): string {
  if (t.status === 'failure') return `failed: ${t.error_info[0] ?? 'INTERNAL_ERROR'}${t.error_info.length > 1 ? ` (${t.error_info.slice(1).join(', ')})` : ''}`;
  return t.status;
}

export function TasksPanel() {
  const { store, client, run } = useConsole();
  const tasks = useTable(store, 'task');
  const [open, setOpen] = useState(false);
  const list = useMemo(() => [...tasks].sort((a, b) => b[1].created.localeCompare(a[1].created)).slice(0, 50), [tasks]);
  const running = list.filter(([, t]) => t.status === 'pending' || t.status === 'cancelling');
  return (
    <section className={`tasks ${open ? 'open' : ''}`} aria-label="Tasks">
      <button className="tasks-toggle" aria-expanded={open} onClick={() => setOpen(!open)}>
        Tasks: {running.length} running{list.length > running.length ? `, ${list.length - running.length} finished` : ''}
      </button>
      {(open || running.length > 0) && (
        <ul>
          {(open ? list : running).map(([ref, t]) => (
            <li key={ref} className={`task ${t.status}`}>
              <span className="name">{t.name_label || t.name_description || 'task'}</span>
              {t.status === 'pending' ? (
                <progress max={1} value={t.progress} aria-label={`${t.name_label} progress`}>{Math.round(t.progress * 100)}%</progress>
              ) : (
                <span className="outcome">{outcome(t)}</span>
              )}
              {t.allowed_operations.includes('cancel') && t.status === 'pending' && (
                <button onClick={() => void run('Cancelling the task', () => client.api.task.cancel(ref))}>Cancel</button>
              )}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
