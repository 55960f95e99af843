/**
 * Performance graphs of a VM, drawn with uPlot from /rrd_updates: one
 * request every step (xapi has no push for metrics), a ten-minute window.
 */
import { useEffect, useRef, useState } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { VM_record } from '../../src/client/generated.ts';
import { useConsole } from './context.ts';
import { CHARTS, parseRrdUpdates, vmSource, type Series } from './rrd.ts';

const WINDOW_S = 600;
const STEP_S = 5;

type Feed = { kind: 'waiting' } | { kind: 'none'; why: string } | { kind: 'data'; series: Map<string, Series>; at: number };

/** Follows a VM's data sources; `none` while the server has no /rrd_updates or no data for the VM yet. */
function useRrd(vmUuid: string): Feed {
  const { client } = useConsole();
  const [feed, setFeed] = useState<Feed>({ kind: 'waiting' });
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const series = new Map<string, Series>();
    let since = Math.floor(Date.now() / 1000) - WINDOW_S;
    const tick = async (): Promise<void> => {
      let delay = STEP_S * 1000;
      try {
        const q = new URLSearchParams({ session_id: client.session, start: String(since), cf: 'AVERAGE', interval: String(STEP_S), json: 'true', vm_uuid: vmUuid });
        const res = await fetch(`/rrd_updates?${q}`);
        if (stopped) return;
        if (res.status === 404 || res.status === 501) {
          setFeed({ kind: 'none', why: 'No performance data yet: this server does not offer /rrd_updates.' });
          delay = 30_000;
        } else if (!res.ok) {
          setFeed({ kind: 'none', why: `No performance data: ${res.status} ${(await res.text()).trim()}` });
          delay = 15_000;
        } else {
          const u = parseRrdUpdates(await res.json());
          u.legend.forEach((l, i) => {
            const ds = vmSource(l, vmUuid);
            if (!ds) return;
            const s = series.get(ds) ?? { label: ds, points: new Map() };
            for (const row of u.rows) if (Number.isFinite(row.values[i])) s.points.set(row.t, row.values[i]);
            series.set(ds, s);
          });
          const cutoff = Math.floor(Date.now() / 1000) - WINDOW_S;
          for (const s of series.values()) for (const t of s.points.keys()) if (t < cutoff) s.points.delete(t);
          if (Number.isFinite(u.end)) since = u.end;
          const any = [...series.values()].some((s) => s.points.size > 0);
          setFeed(any ? { kind: 'data', series, at: Date.now() } : { kind: 'none', why: 'No data yet: the first samples come a few seconds after the VM starts.' });
        }
      } catch (e) {
        if (stopped) return;
        setFeed({ kind: 'none', why: `No performance data: ${(e as Error).message}` });
        delay = 15_000;
      }
      if (!stopped) timer = setTimeout(() => void tick(), delay);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [client, vmUuid]);
  return feed;
}

function Chart({ title, unit, scale, series }: { title: string; unit: string; scale: number; series: readonly Series[] }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const names = series.map((s) => s.label).join(',');
  useEffect(() => {
    if (!box.current) return;
    const width = Math.max(280, Math.min(box.current.clientWidth || 600, 900));
    const p = new uPlot({
      title, width, height: 180,
      scales: { x: { time: true } },
      axes: [{}, { label: unit, size: 60 }],
      series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: `hsl(${(i * 67) % 360} 70% 45%)`, width: 1.5 }))],
    }, [[]], box.current);
    plot.current = p;
    return () => {
      p.destroy();
      plot.current = null;
    };
    // re-created only when the set of series changes
  }, [title, unit, names]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    const times = [...new Set(series.flatMap((s) => [...s.points.keys()]))].sort((a, b) => a - b);
    const data: (number | null)[][] = [times, ...series.map((s) => times.map((t) => { const v = s.points.get(t); return v === undefined ? null : v * scale; }))];
    plot.current?.setData(data as uPlot.AlignedData);
  });
  return <div className="chart" ref={box} data-testid={`chart-${title.toLowerCase()}`} />;
}

export function VmGraphs({ vm }: { vm: VM_record }) {
  const feed = useRrd(vm.uuid);
  if (feed.kind === 'waiting') return <p className="muted">Loading performance data…</p>;
  if (feed.kind === 'none') return <p className="muted no-data" role="status">{feed.why}</p>;
  const all = [...feed.series.values()];
  return (
    <div className="charts">
      {CHARTS.map((c) => {
        const mine = all.filter((s) => c.match.test(s.label)).sort((a, b) => a.label.localeCompare(b.label));
        if (mine.length === 0) return <p key={c.id} className="muted">{c.title}: no data yet.</p>;
        return <Chart key={c.id} title={c.title} unit={c.unit} scale={c.scale} series={mine} />;
      })}
    </div>
  );
}
