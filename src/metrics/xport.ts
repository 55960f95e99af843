/**
 * What /rrd_updates answers: rows of several RRDs since a time, in xapi's
 * `xport` form (XML, or JSON with json=true), newest row first; legend
 * entries `CF:host:<uuid>:<ds>` / `CF:vm:<uuid>:<ds>`.
 */
import { peek, type Cf, type Rra, type Rrd } from './rrd.ts';

/** xapi's float spelling (C's %0.15g; NaN, Infinity, "0.0" for zero). */
export function formatFloat(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return '0.0';
  const abs = Math.abs(x);
  if (abs >= 1e-4 && abs < 1e15) {
    // JavaScript's shortest form, when it has at most 15 significant digits, is what %0.15g prints
    const short = String(x);
    if (short.length <= 16) return short;
  }
  const exp = Math.floor(Math.log10(Math.abs(x)));
  if (exp < -4 || exp >= 15) {
    const [mantissa, e] = x.toExponential(14).split('e') as [string, string];
    const n = Number(e);
    return `${trimZeros(mantissa)}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  return trimZeros(x.toPrecision(15));
}

function trimZeros(s: string): string {
  if (!s.includes('.')) return s;
  let end = s.length;
  while (s.charCodeAt(end - 1) === 48) end--; // '0'
  if (s.charCodeAt(end - 1) === 46) end--; // '.'
  return s.slice(0, end);
}

export interface Export {
  start: number;
  step: number;
  end: number;
  legend: string[];
  rows: { t: number; values: number[] }[];
}

export class NoRraAvailable extends Error {
  constructor() { super('No RRA available'); this.name = 'NoRraAvailable'; }
}

/**
 * The archives of `rrd` that answer a query from `start` at `pdpInterval`
 * steps or coarser: the finest whose span still reaches back to `start`
 * (all its CFs, or `cf`'s), else the coarsest ones, as xapi picks them.
 */
export function bestRras(rrd: Rrd, pdpInterval: number, cf: Cf | undefined, start: number): Rra[] {
  const rras = cf ? rrd.rras.filter((r) => r.cf === cf) : rrd.rras;
  if (rras.length === 0) throw new NoRraAvailable();
  const lastPdp = Math.floor(rrd.lastUpdated / rrd.step) * rrd.step;
  const reaches = (t: number) => (r: Rra): boolean => r.pdpPerRow >= pdpInterval && t > lastPdp - rrd.step * r.rows * r.pdpPerRow;
  const first = rras.find(reaches(start));
  if (first) return rras.filter((r) => r.pdpPerRow === first.pdpPerRow && r.rows === first.rows);
  const coarsest = rras[rras.length - 1]!;
  return rras.filter(reaches(1 + lastPdp - rrd.step * coarsest.rows * coarsest.pdpPerRow));
}

/**
 * Rows of several RRDs (updated at the same instants), each named by a
 * prefix (`host:<uuid>:`). `start` below 0 is relative to the last update;
 * `interval` is the wanted resolution in seconds (0: the finest).
 */
export function exportRows(prefixed: readonly (readonly [string, Rrd])[], start: number, interval: number, cf: Cf | undefined): Export {
  const head = prefixed[0]?.[1];
  if (!head) throw new NoRraAvailable();
  const step = head.step;
  const sources = prefixed.filter(([, r]) => r.step === step);
  const from = sources.reduce((m, [, r]) => Math.min(m, start < 0 ? start + Math.floor(r.lastUpdated) : start), Infinity);
  const pdpInterval = Math.floor(interval / step);
  const chosen = sources.map(([prefix, r]) => [prefix, r, bestRras(r, pdpInterval, cf, from)] as const);
  const firstRra = chosen.find(([, , rras]) => rras.length > 0)?.[2][0];
  if (!firstRra) throw new NoRraAvailable();
  const same = (r: Rra): boolean => r.pdpPerRow === firstRra.pdpPerRow && r.rows === firstRra.rows;
  const columns = chosen.map(([prefix, r, rras]) => [prefix, r, rras.filter(same)] as const);
  const legend = columns.flatMap(([prefix, r, rras]) => rras.flatMap((rra) => r.dss.map((ds) => `${rra.cf}:${prefix}${ds.name}`)));
  const rraStep = step * firstRra.pdpPerRow;
  const end = Math.floor(head.lastUpdated / rraStep) * rraStep;
  // one ring per column, read row by row
  const rings: Float64Array[] = [];
  const heads: number[] = [];
  for (const [, r, rras] of columns) {
    for (const rra of rras) {
      for (let d = 0; d < r.dss.length; d++) {
        rings.push(rra.rings[d]!);
        heads.push(rra.head);
      }
    }
  }
  const n = firstRra.rows;
  const rows: Export['rows'] = [];
  for (let i = 0; i < n; i++) {
    const t = end - i * rraStep;
    if (t < from) break;
    const values = new Array<number>(rings.length);
    for (let c = 0; c < rings.length; c++) values[c] = rings[c]![(heads[c]! - i + n) % n]!;
    rows.push({ t, values });
  }
  return { start: Math.floor(from / rraStep) * rraStep + rraStep, step: rraStep, end, legend, rows };
}

const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function xportXml(e: Export): string {
  const parts: string[] = ['<?xml version="1.0" encoding="UTF-8"?>\n<xport><meta>'];
  parts.push(`<start>${e.start}</start><step>${e.step}</step><end>${e.end}</end><rows>${e.rows.length}</rows><columns>${e.legend.length}</columns><legend>`);
  for (const l of e.legend) parts.push(`<entry>${escapeXml(l)}</entry>`);
  parts.push('</legend></meta><data>');
  for (const row of e.rows) parts.push(`<row><t>${row.t}</t><v>${row.values.map(formatFloat).join('</v><v>')}</v></row>`);
  parts.push('</data></xport>');
  return parts.join('');
}

/**
 * The JSON form. Times and counts are numbers and values numbers too (what
 * Xen Orchestra's parser compares and computes with); a value that is not a
 * finite number travels as xapi spells it ("NaN"), so the document stays JSON.
 */
export function xportJson(e: Export): string {
  const value = (v: number): string => (Number.isFinite(v) ? String(v) : `"${formatFloat(v)}"`);
  const parts: string[] = [`{"meta":{"start":${e.start},"step":${e.step},"end":${e.end},"rows":${e.rows.length},"columns":${e.legend.length},"legend":${JSON.stringify(e.legend)}},"data":[`];
  e.rows.forEach((row, i) => {
    // the common case, every value a number, is written natively
    const values = row.values.every(Number.isFinite) ? JSON.stringify(row.values) : `[${row.values.map(value).join(',')}]`;
    parts.push(`${i ? ',' : ''}{"t":${row.t},"values":${values}}`);
  });
  parts.push(']}');
  return parts.join('');
}
