/**
 * A whole RRD as /host_rrd and /vm_rrd give it: xapi's (rrdtool-like) XML,
 * or its JSON form (json=true; every number as a string, as xapi writes it).
 * Rows oldest first.
 */
import { peek, type Ds, type Rra, type Rrd } from './rrd.ts';
import { formatFloat } from './xport.ts';

const dsType = (ds: Ds): string => ds.type.toUpperCase();
const lastDs = (ds: Ds): string => (Number.isNaN(ds.last) ? 'U' : formatFloat(ds.last));
/** Seconds of the open PDP without a known value. */
const unknownSec = (rrd: Rrd, ds: Ds): number => Math.max(0, Math.floor((rrd.lastUpdated % rrd.step) - ds.known));
const xmlName = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The rows of an archive, oldest first, one value per source. */
function rowsOf(rrd: Rrd, rra: Rra): number[][] {
  const out: number[][] = [];
  for (let back = rra.rows - 1; back >= 0; back--) out.push(rrd.dss.map((_, i) => peek(rra, i, back)));
  return out;
}

export function rrdXml(rrd: Rrd): string {
  const p: string[] = ['<?xml version="1.0" encoding="UTF-8"?>\n<rrd><version>0003</version>'];
  p.push(`<step>${rrd.step}</step><lastupdate>${Math.floor(rrd.lastUpdated)}</lastupdate>`);
  for (const ds of rrd.dss) {
    p.push(`<ds><name>${xmlName(ds.name)}</name><type>${dsType(ds)}</type><minimal_heartbeat>${formatFloat(ds.heartbeat)}</minimal_heartbeat>`);
    p.push(`<min>${formatFloat(ds.min)}</min><max>${formatFloat(ds.max)}</max><last_ds>${lastDs(ds)}</last_ds>`);
    p.push(`<value>${formatFloat(ds.acc)}</value><unknown_sec>${unknownSec(rrd, ds)}</unknown_sec></ds>`);
  }
  for (const rra of rrd.rras) {
    p.push(`<rra><cf>${rra.cf}</cf><pdp_per_row>${rra.pdpPerRow}</pdp_per_row><params><xff>${formatFloat(rra.xff)}</xff></params><cdp_prep>`);
    for (const cdp of rra.cdps) {
      p.push(`<ds><primary_value>0.0</primary_value><secondary_value>0.0</secondary_value><value>${formatFloat(cdp.value)}</value><unknown_datapoints>${cdp.unknown}</unknown_datapoints></ds>`);
    }
    p.push('</cdp_prep><database>');
    for (const row of rowsOf(rrd, rra)) p.push(`<row>${row.map((v) => `<v>${formatFloat(v)}</v>`).join('')}</row>`);
    p.push('</database></rra>');
  }
  p.push('</rrd>');
  return p.join('');
}

export function rrdJson(rrd: Rrd): string {
  const f = formatFloat;
  return JSON.stringify({
    version: '0003',
    step: String(rrd.step),
    lastupdate: f(rrd.lastUpdated),
    ds: rrd.dss.map((ds) => ({
      name: ds.name, type: dsType(ds), minimal_heartbeat: f(ds.heartbeat), min: f(ds.min), max: f(ds.max),
      last_ds: lastDs(ds), value: f(ds.acc), unknown_sec: String(unknownSec(rrd, ds)), last_updated: f(rrd.lastUpdated),
    })),
    rra: rrd.rras.map((rra) => ({
      cf: rra.cf,
      pdp_per_row: String(rra.pdpPerRow),
      params: { xff: f(rra.xff) },
      cdp_prep: { ds: rra.cdps.map((c) => ({ primary_value: '0.0', secondary_value: '0.0', value: f(c.value), unknown_datapoints: String(c.unknown) })) },
      database: rowsOf(rrd, rra).map((row) => row.map(f)),
    })),
  });
}
