/**
 * Reading xapi's /rrd_updates (JSON form, `json=true`): `meta.legend` names
 * each column `CF:vm:<uuid>:<data source>`, `data` holds rows of `t` and
 * `values` (numbers written as strings, "NaN" for unknown).
 */

export interface RrdUpdates {
  readonly start: number;
  readonly step: number;
  readonly end: number;
  readonly legend: readonly string[];
  readonly rows: readonly { readonly t: number; readonly values: readonly number[] }[];
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number => (typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : Number.NaN);

/** Checks and converts one reply; throws on anything that is not xapi's shape. */
export function parseRrdUpdates(json: unknown): RrdUpdates {
  if (!isRecord(json) || !isRecord(json.meta) || !Array.isArray(json.data)) throw new Error('not an rrd_updates reply');
  const { meta } = json;
  if (!Array.isArray(meta.legend)) throw new Error('rrd_updates: no legend');
  const legend = meta.legend.map(String);
  const rows = json.data.filter(isRecord).map((r) => ({ t: num(r.t), values: Array.isArray(r.values) ? r.values.map(num) : [] }))
    .filter((r) => Number.isFinite(r.t) && r.values.length === legend.length)
    .sort((a, b) => a.t - b.t);
  return { start: num(meta.start), step: num(meta.step), end: num(meta.end), legend, rows };
}

/** A VM's data source name from a legend entry, or null for another object's. */
export function vmSource(legend: string, vmUuid: string): string | null {
  const parts = legend.split(':');
  if (parts.length < 4 || parts[1] !== 'vm' || parts[2] !== vmUuid) return null;
  return parts.slice(3).join(':');
}

export interface Series {
  readonly label: string;
  readonly points: Map<number, number>;
}

/** The charts of a VM page and which data sources feed each, with the unit's scale. */
export const CHARTS = [
  { id: 'cpu', title: 'CPU', unit: '%', scale: 100, match: /^cpu\d+$/ },
  { id: 'memory', title: 'Memory', unit: 'MiB', scale: 1 / (1024 * 1024), match: /^memory(_internal_free|_target)?$/ },
  { id: 'disk', title: 'Disk', unit: 'KiB/s', scale: 1 / 1024, match: /^vbd_.+_(read|write)$/ },
  { id: 'network', title: 'Network', unit: 'KiB/s', scale: 1 / 1024, match: /^vif_\d+_(rx|tx)$/ },
] as const;
