/**
 * A round-robin database as xapi keeps one per host and per VM: data sources
 * (gauge, absolute, derive) turned into one primary data point (PDP) per
 * step, consolidated into archives (RRAs) of AVERAGE, MIN or MAX rows.
 *
 * PDPs are aligned to multiples of the step and rows to multiples of their
 * span (as xapi and rrdtool align them), so the rows of every RRD updated at
 * the same instants line up, which /rrd_updates relies on.
 */

export type DsType = 'gauge' | 'absolute' | 'derive';
export type Cf = 'AVERAGE' | 'MIN' | 'MAX';

export interface DsSpec {
  readonly name: string;
  readonly type: DsType;
  readonly min: number;
  readonly max: number;
}

export interface RraSpec {
  readonly cf: Cf;
  /** PDPs per row. */
  readonly pdpPerRow: number;
  readonly rows: number;
  /** The share of unknown PDPs above which a row is unknown. */
  readonly xff: number;
}

/** A data source and where its current PDP stands. */
export interface Ds extends DsSpec {
  /** Most seconds between two updates before the data counts as unknown. */
  heartbeat: number;
  /** The last raw value (a counter for derive sources), NaN when unknown. */
  last: number;
  /** derive: rate × seconds known so far in the current PDP; gauge/absolute: the latest rate. */
  acc: number;
  /** Seconds of the current PDP whose rate is known. */
  known: number;
}

/** A CDP in preparation: what the PDPs of the current row add up to. */
interface Cdp { value: number; unknown: number }

export interface Rra extends RraSpec {
  /** One ring of rows per data source, in the order of Rrd.dss. */
  rings: Float64Array[];
  /** Index of the newest row in each ring. */
  head: number;
  cdps: Cdp[];
}

/** xapi's heartbeat for every data source: 300 s without an update makes a gap. */
export const HEARTBEAT_S = 300;

/** xapi's archives: 5 s for 10 minutes, 1 minute for 2 hours, 1 hour for a week, 1 day for a year. */
export const TIMESCALES: readonly { pdpPerRow: number; rows: number }[] = [
  { pdpPerRow: 1, rows: 120 },
  { pdpPerRow: 12, rows: 120 },
  { pdpPerRow: 720, rows: 168 },
  { pdpPerRow: 17280, rows: 366 },
];

/** As xapi with min/max archives on: AVERAGE alone at the finest step (its min and max would be the same), then AVERAGE, MIN, MAX. */
export function standardRras(): RraSpec[] {
  return TIMESCALES.flatMap(({ pdpPerRow, rows }) =>
    pdpPerRow === 1
      ? [{ cf: 'AVERAGE' as const, pdpPerRow, rows, xff: 0.5 }]
      : (['AVERAGE', 'MIN', 'MAX'] as const).map((cf) => ({ cf, pdpPerRow, rows, xff: 1 })));
}

const cdpStart = (cf: Cf): number => (cf === 'MIN' ? Infinity : cf === 'MAX' ? -Infinity : 0);

function newRing(rows: number): Float64Array {
  return new Float64Array(rows).fill(NaN);
}

export class Rrd {
  constructor(
    readonly step: number,
    public lastUpdated: number,
    readonly dss: Ds[],
    readonly rras: Rra[],
  ) {}

  static create(specs: readonly DsSpec[], rras: readonly RraSpec[], now: number, step = 5): Rrd {
    const rrd = new Rrd(step, now, [], rras.map((r) => ({ ...r, rings: [], head: 0, cdps: [] })));
    for (const s of specs) rrd.addDs(s);
    return rrd;
  }

  names(): string[] {
    return this.dss.map((d) => d.name);
  }

  has(name: string): boolean {
    return this.dss.some((d) => d.name === name);
  }

  /** Adds a source (its history unknown); a name already present is left alone. */
  addDs(spec: DsSpec): void {
    if (this.has(spec.name)) return;
    this.dss.push({ ...spec, heartbeat: HEARTBEAT_S, last: NaN, acc: 0, known: 0 });
    // the PDPs of this row that passed before the source existed are unknown
    const pdpsIntoRow = (n: number): number => Math.floor(this.lastUpdated / this.step) % n;
    for (const rra of this.rras) {
      rra.rings.push(newRing(rra.rows));
      rra.cdps.push({ value: cdpStart(rra.cf), unknown: pdpsIntoRow(rra.pdpPerRow) });
    }
  }

  removeDs(name: string): void {
    const i = this.dss.findIndex((d) => d.name === name);
    if (i < 0) return;
    this.dss.splice(i, 1);
    for (const rra of this.rras) {
      rra.rings.splice(i, 1);
      rra.cdps.splice(i, 1);
    }
  }

  /**
   * Takes the values of time `t` (seconds): a source without a value (or
   * NaN) is unknown for the interval. Times that do not move forward are
   * ignored (the clock went back).
   */
  update(t: number, values: ReadonlyMap<string, number>): void {
    const prev = this.lastUpdated;
    const interval = t - prev;
    if (!(interval > 0)) return;
    const step = this.step;
    const procPdp = Math.floor(prev / step) * step;
    const occuPdp = Math.floor(t / step) * step;
    const elapsed = Math.round((occuPdp - procPdp) / step);
    const rates = this.dss.map((ds) => rateOf(ds, values.get(ds.name), interval));
    this.lastUpdated = t;
    if (elapsed === 0) {
      this.dss.forEach((ds, i) => accumulate(ds, rates[i]!, interval));
      return;
    }
    // the PDP that was open is closed by the part of this interval up to its end
    const first = this.dss.map((ds, i) => {
      accumulate(ds, rates[i]!, procPdp + step - prev);
      return ds.known > 0 ? (ds.type === 'derive' ? ds.acc / ds.known : ds.acc) : NaN;
    });
    // any further whole PDPs in the interval all have this update's rate
    for (const rra of this.rras) feed(rra, procPdp / step, first, rates, elapsed);
    const post = t - occuPdp;
    this.dss.forEach((ds, i) => {
      ds.acc = 0;
      ds.known = 0;
      accumulate(ds, rates[i]!, post);
    });
  }

  /** The newest row of the finest archive of `cf` (NaN when unknown); undefined for no such source. */
  latest(name: string, cf: Cf = 'AVERAGE'): number | undefined {
    const i = this.dss.findIndex((d) => d.name === name);
    const rra = this.rras.find((r) => r.cf === cf);
    if (i < 0 || !rra) return undefined;
    return rra.rings[i]![rra.head]!;
  }
}

/** Row `back` rows before the newest (0 = newest). */
export function peek(rra: Rra, ds: number, back: number): number {
  return rra.rings[ds]![(rra.head - back + rra.rows * 2) % rra.rows]!;
}

function rateOf(ds: Ds, raw: number | undefined, interval: number): number {
  const value = raw ?? NaN;
  let rate: number;
  if (interval > ds.heartbeat || Number.isNaN(value)) rate = NaN;
  else if (ds.type === 'gauge') rate = value;
  else if (ds.type === 'absolute') rate = value / interval;
  else rate = (value - ds.last) / interval; // NaN after an unknown value
  if (ds.type === 'derive') ds.last = value;
  // CPU time read a moment late can overshoot a little: capped, as xapi caps it
  if (ds.type === 'derive' && rate > ds.max && rate < ds.max * 1.05) return ds.max;
  // out of range is unknown: a counter that went back (a device re-plugged, a domain rebuilt) makes a gap, not a negative rate
  return rate < ds.min || rate > ds.max ? NaN : rate;
}

function accumulate(ds: Ds, rate: number, seconds: number): void {
  if (Number.isNaN(rate) || seconds <= 0) return;
  if (ds.type === 'derive') ds.acc += rate * seconds;
  else ds.acc = rate;
  ds.known += seconds;
}

/** Adds `count` PDPs from absolute PDP index `index`: `first`, then `count - 1` of `rest`. */
function feed(rra: Rra, index: number, first: readonly number[], rest: readonly number[], count: number): void {
  const n = rra.pdpPerRow;
  add(rra, first, 1);
  index += 1;
  count -= 1;
  if (index % n === 0) pushRow(rra);
  while (count > 0) {
    const intoRow = index % n;
    if (intoRow === 0 && count >= n) {
      // whole rows of one value: as many as fit in the ring
      const whole = Math.floor(count / n);
      for (let k = 0; k < Math.min(whole, rra.rows); k++) {
        add(rra, rest, n);
        pushRow(rra);
      }
      index += whole * n;
      count -= whole * n;
      continue;
    }
    const take = Math.min(count, n - intoRow);
    add(rra, rest, take);
    index += take;
    count -= take;
    if (index % n === 0) pushRow(rra);
  }
}

function add(rra: Rra, pdps: readonly number[], times: number): void {
  for (let i = 0; i < rra.cdps.length; i++) {
    const cdp = rra.cdps[i]!;
    const v = pdps[i]!;
    if (Number.isNaN(v)) cdp.unknown += times;
    else if (rra.cf === 'AVERAGE') cdp.value += v * times;
    else if (rra.cf === 'MIN') cdp.value = Math.min(cdp.value, v);
    else cdp.value = Math.max(cdp.value, v);
  }
}

function pushRow(rra: Rra): void {
  rra.head = (rra.head + 1) % rra.rows;
  const n = rra.pdpPerRow;
  for (let i = 0; i < rra.cdps.length; i++) {
    const cdp = rra.cdps[i]!;
    const known = n - cdp.unknown;
    const unknownRow = known <= 0 || cdp.unknown > rra.xff * n;
    rra.rings[i]![rra.head] = unknownRow ? NaN : rra.cf === 'AVERAGE' ? cdp.value / known : cdp.value;
    cdp.value = cdpStart(rra.cf);
    cdp.unknown = 0;
  }
}
