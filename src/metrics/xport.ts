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

/**
 * An export whose rows are read on demand (newest first), so that writers
 * can stream them: the ring positions are fixed when it is made, and the
 * oldest row, the only one a collection step could overwrite meanwhile, is
 * copied then.
 */
export interface Export {
  start: number;
  step: number;
  end: number;
  legend: string[];
  /** The time of each row, newest first. */
  times: number[];
  /** The values of row `i`, one per legend entry. */
  values(i: number): number[];
}

/** Every row at once (tests, small exports). */
export const rowsOf = (e: Export): { t: number; values: number[] }[] => e.times.map((t, i) => ({ t, values: e.values(i) }));

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
  const times: number[] = [];
  for (let i = 0; i < n && end - i * rraStep >= from; i++) times.push(end - i * rraStep);
  const read = (i: number): number[] => {
    const values = new Array<number>(rings.length);
    for (let c = 0; c < rings.length; c++) values[c] = rings[c]![(heads[c]! - i + n) % n]!;
    return values;
  };
  const oldest = times.length === n ? read(n - 1) : undefined;
  return {
    start: Math.floor(from / rraStep) * rraStep + rraStep, step: rraStep, end, legend, times,
    values: (i) => (i === n - 1 && oldest ? oldest : read(i)),
  };
}

const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The XML form, in pieces: the head, then a row at a time. */
export function* xportXmlChunks(e: Export): Generator<string> {
  yield `<?xml version="1.0" encoding="UTF-8"?>\n<xport><meta><start>${e.start}</start><step>${e.step}</step><end>${e.end}</end><rows>${e.times.length}</rows><columns>${e.legend.length}</columns><legend>${e.legend.map((l) => `<entry>${escapeXml(l)}</entry>`).join('')}</legend></meta><data>`;
  for (let i = 0; i < e.times.length; i++) yield `<row><t>${e.times[i]}</t><v>${e.values(i).map(formatFloat).join('</v><v>')}</v></row>`;
  yield '</data></xport>';
}

/**
 * The JSON form, in pieces. Times and counts are numbers and values numbers
 * too (what Xen Orchestra's parser compares and computes with); a value that
 * is not a finite number travels as xapi spells it ("NaN"), so the document
 * stays JSON.
 */
export function* xportJsonChunks(e: Export): Generator<string> {
  const value = (v: number): string => (Number.isFinite(v) ? String(v) : `"${formatFloat(v)}"`);
  yield `{"meta":{"start":${e.start},"step":${e.step},"end":${e.end},"rows":${e.times.length},"columns":${e.legend.length},"legend":${JSON.stringify(e.legend)}},"data":[`;
  for (let i = 0; i < e.times.length; i++) {
    const row = e.values(i);
    // the common case, every value a number, is written natively
    const values = row.every(Number.isFinite) ? JSON.stringify(row) : `[${row.map(value).join(',')}]`;
    yield `${i ? ',' : ''}{"t":${e.times[i]},"values":${values}}`;
  }
  yield ']}';
}

export const xportXml = (e: Export): string => [...xportXmlChunks(e)].join('');
export const xportJson = (e: Export): string => [...xportJsonChunks(e)].join('');
