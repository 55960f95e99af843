/**
 * RRDs on disk: `<data-dir>/rrd/<uuid>.json` (0600), written atomically.
 * A VM's file is its archive while it is not running and is reloaded when it
 * starts again; the host's is written periodically and on stop. Anything
 * unreadable is ignored (a fresh RRD starts), never trusted.
 */
import { chmod, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Rrd, type Cf, type Ds, type DsType, type Rra } from './rrd.ts';

interface SavedDs { name: string; type: DsType; min: number | null; max: number | null; heartbeat: number; last: number | null; acc: number; known: number }
interface SavedRra { cf: Cf; pdpPerRow: number; rows: number; xff: number; head: number; cdps: [number | null, number][]; rings: (number | null)[][] }
interface Saved { version: 1; step: number; lastUpdated: number; dss: SavedDs[]; rras: SavedRra[] }

/** JSON has no NaN or infinities: null, and strings for the infinities. */
const out = (x: number): number | null => (Number.isFinite(x) ? x : null);
const back = (x: unknown, fallback: number): number => (typeof x === 'number' && Number.isFinite(x) ? x : fallback);

export function serialize(rrd: Rrd): string {
  const saved: Saved = {
    version: 1,
    step: rrd.step,
    lastUpdated: rrd.lastUpdated,
    dss: rrd.dss.map((d) => ({ name: d.name, type: d.type, min: out(d.min), max: out(d.max), heartbeat: d.heartbeat, last: out(d.last), acc: out(d.acc) ?? 0, known: d.known })),
    rras: rrd.rras.map((r) => ({
      cf: r.cf, pdpPerRow: r.pdpPerRow, rows: r.rows, xff: r.xff, head: r.head,
      cdps: r.cdps.map((c) => [out(c.value), c.unknown]),
      rings: r.rings.map((ring) => Array.from(ring, out)),
    })),
  };
  return JSON.stringify(saved);
}

const CFS: readonly Cf[] = ['AVERAGE', 'MIN', 'MAX'];
const TYPES: readonly DsType[] = ['gauge', 'absolute', 'derive'];
const isInt = (x: unknown, lo: number, hi: number): x is number => typeof x === 'number' && Number.isInteger(x) && x >= lo && x <= hi;

/** An RRD from serialize()'s text; undefined when the text is not one. */
export function deserialize(text: string): Rrd | undefined {
  let s: Saved;
  try {
    s = JSON.parse(text) as Saved;
  } catch {
    return undefined;
  }
  if (s?.version !== 1 || !isInt(s.step, 1, 86400) || typeof s.lastUpdated !== 'number' || !Array.isArray(s.dss) || !Array.isArray(s.rras)) return undefined;
  const n = s.dss.length;
  const dss: Ds[] = [];
  for (const d of s.dss) {
    if (typeof d?.name !== 'string' || !TYPES.includes(d.type)) return undefined;
    dss.push({ name: d.name, type: d.type, min: back(d.min, -Infinity), max: back(d.max, Infinity), heartbeat: back(d.heartbeat, 300), last: back(d.last, NaN), acc: back(d.acc, 0), known: back(d.known, 0) });
  }
  const rras: Rra[] = [];
  for (const r of s.rras) {
    if (!CFS.includes(r?.cf) || !isInt(r.pdpPerRow, 1, 1e7) || !isInt(r.rows, 1, 1e5) || !isInt(r.head, 0, r.rows - 1)) return undefined;
    if (!Array.isArray(r.rings) || r.rings.length !== n || !Array.isArray(r.cdps) || r.cdps.length !== n) return undefined;
    if (r.rings.some((ring) => !Array.isArray(ring) || ring.length !== r.rows)) return undefined;
    const start = r.cf === 'MIN' ? Infinity : r.cf === 'MAX' ? -Infinity : 0;
    rras.push({
      cf: r.cf, pdpPerRow: r.pdpPerRow, rows: r.rows, xff: back(r.xff, 0.5), head: r.head,
      cdps: r.cdps.map((c) => ({ value: back(Array.isArray(c) ? c[0] : null, start), unknown: Array.isArray(c) && isInt(c[1], 0, r.pdpPerRow) ? c[1] : 0 })),
      rings: r.rings.map((ring) => Float64Array.from(ring, (v) => back(v, NaN))),
    });
  }
  return new Rrd(s.step, s.lastUpdated, dss, rras);
}

export class RrdFiles {
  constructor(private readonly dir: string) {}

  private path(uuid: string): string {
    if (!/^[0-9a-f-]{36}$/i.test(uuid)) throw new Error(`not a uuid: ${uuid}`);
    return join(this.dir, `${uuid}.json`);
  }

  async save(uuid: string, rrd: Rrd): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const file = this.path(uuid);
    const tmp = `${file}.tmp`;
    await writeFile(tmp, serialize(rrd), { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, file);
  }

  async load(uuid: string): Promise<Rrd | undefined> {
    const text = await readFile(this.path(uuid), 'utf8').catch(() => undefined);
    return text === undefined ? undefined : deserialize(text);
  }

  async forget(uuid: string): Promise<void> {
    await rm(this.path(uuid), { force: true });
  }

  /** The uuids that have a file. */
  async uuids(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => /^[0-9a-f-]{36}\.json$/i.test(n)).map((n) => n.slice(0, 36));
  }
}
