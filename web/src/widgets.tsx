/** Small pieces shared by the pages: editable text, usage bars, property tables, tabs. */
import { useState, type FormEvent, type ReactNode } from 'react';
import { useConsole } from './context.ts';
import { bytes } from './format.ts';
import { go, linkTo } from './route.ts';

/** A read-write field: shown as text, edited in place, saved through its setter. */
export function Editable({ label, value, save }: { label: string; value: string; save: (v: string) => Promise<unknown> }) {
  const { run } = useConsole();
  const [draft, setDraft] = useState<string | null>(null);
  if (draft === null) {
    return (
      <span className="editable">
        {value || <em className="muted">none</em>}{' '}
        <button className="small" aria-label={`Edit ${label}`} onClick={() => setDraft(value)}>Edit</button>
      </span>
    );
  }
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(`Setting ${label}`, () => save(draft));
    setDraft(null);
  };
  return (
    <form className="editable" onSubmit={submit}>
      <input aria-label={label} value={draft} onChange={(e) => setDraft(e.target.value)} autoFocus onKeyDown={(e) => e.key === 'Escape' && setDraft(null)} />
      <button type="submit" className="small primary">Save</button>
      <button type="button" className="small" onClick={() => setDraft(null)}>Cancel</button>
    </form>
  );
}

export function Properties({ rows }: { rows: readonly (readonly [string, ReactNode])[] }) {
  return (
    <dl className="properties">
      {rows.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

export function UsageBar({ label, used, total }: { label: string; used: number; total: number }) {
  const fraction = total > 0 ? Math.min(1, Math.max(0, used / total)) : 0;
  return (
    <div className="usage">
      <span>{label}: {bytes(used)} of {bytes(total)} ({Math.round(fraction * 100)}%)</span>
      <meter min={0} max={1} low={0.75} high={0.9} optimum={0.2} value={fraction} aria-label={label} />
    </div>
  );
}

export interface Tab {
  readonly id: string;
  readonly title: string;
}

/** Tabs are part of the route (`#/VM/<ref>/<tab>`), so a reload or a link lands on the same tab. */
export function Tabs({ base, tabs, current }: { base: readonly string[]; tabs: readonly Tab[]; current: string }) {
  return (
    <div className="tabs" role="tablist">
      {tabs.map((t) => (
        <a key={t.id} role="tab" aria-selected={t.id === current} className={t.id === current ? 'selected' : ''} href={linkTo(...base, t.id)}
          onKeyDown={(e) => {
            const i = tabs.findIndex((x) => x.id === current);
            if (e.key === 'ArrowRight') go(...base, tabs[(i + 1) % tabs.length].id);
            if (e.key === 'ArrowLeft') go(...base, tabs[(i + tabs.length - 1) % tabs.length].id);
          }}>
          {t.title}
        </a>
      ))}
    </div>
  );
}

export function RefLink({ cls, refId, children }: { cls: string; refId: string; children: ReactNode }) {
  return <a href={linkTo(cls, refId)}>{children}</a>;
}
