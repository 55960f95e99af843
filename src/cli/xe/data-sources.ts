/**
 * xe's data-source commands (xapi's names, arguments and output):
 * `vm-data-source-list|record|query|forget` and `host-data-source-…`.
 * Lists print each source as a record; a query prints the value with six
 * decimals.
 */
import type { Command, Ctx } from './context.ts';
import { reqParam } from './context.ts';
import { printRecords } from './format.ts';
import { hostCmd, vmCmd } from './ops.ts';

interface DataSource { name_label: string; name_description: string; enabled: boolean; standard: boolean; min: number; max: number; units: string }

/** OCaml's string_of_float, as xe prints min and max: "0.", "1.", "inf", 12 significant digits. */
function ocamlFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  // the largest double is how the API says "unbounded"
  if (Math.abs(x) >= Number.MAX_VALUE) return x > 0 ? 'inf' : '-inf';
  const s = String(Number(x.toPrecision(12)));
  return /[.e]/.test(s) ? s : `${s}.`;
}

/** The "%f" of a query's answer. */
const fixed = (x: number): string => (Number.isNaN(x) ? 'nan' : Number.isFinite(x) ? x.toFixed(6) : x > 0 ? 'inf' : '-inf');

function printSources(ctx: Ctx, sources: readonly DataSource[]): void {
  printRecords(ctx.out, sources.map((d) => [
    ['name_label', d.name_label], ['name_description', d.name_description], ['enabled', String(d.enabled)],
    ['standard', String(d.standard)], ['min', ocamlFloat(d.min)], ['max', ocamlFloat(d.max)], ['units', d.units],
  ] as const));
}

export function dataSourceCommands(): Command[] {
  return [
    vmCmd('vm-data-source-list', [], [], 'List the data sources that can be recorded for a VM.', async (ctx, vm) => {
      printSources(ctx, await ctx.client.api.VM.get_data_sources(vm.ref));
    }),
    vmCmd('vm-data-source-record', ['data-source'], [], 'Record the specified data source for a VM.', async (ctx, vm) => {
      await ctx.client.api.VM.record_data_source(vm.ref, reqParam(ctx, 'data-source'));
    }),
    vmCmd('vm-data-source-query', ['data-source'], [], 'Query the last value read from a VM data source.', async (ctx, vm) => {
      ctx.out(`${fixed(await ctx.client.api.VM.query_data_source(vm.ref, reqParam(ctx, 'data-source')))}\n`);
    }),
    vmCmd('vm-data-source-forget', ['data-source'], [], 'Stop recording the specified data source for a VM, and forget all of the recorded data.', async (ctx, vm) => {
      await ctx.client.api.VM.forget_data_source_archives(vm.ref, reqParam(ctx, 'data-source'));
    }),
    hostCmd('host-data-source-list', [], 'List the data sources that can be recorded for a host.', async (ctx, h) => {
      printSources(ctx, await ctx.client.api.host.get_data_sources(h.ref));
    }),
    hostCmd('host-data-source-record', [], 'Record the specified data source for a host.', async (ctx, h) => {
      await ctx.client.api.host.record_data_source(h.ref, reqParam(ctx, 'data-source'));
    }, ['data-source']),
    hostCmd('host-data-source-query', [], 'Query the last value read from a host data source.', async (ctx, h) => {
      ctx.out(`${fixed(await ctx.client.api.host.query_data_source(h.ref, reqParam(ctx, 'data-source')))}\n`);
    }, ['data-source']),
    hostCmd('host-data-source-forget', [], 'Stop recording the specified data source for a host, and forget all of the recorded data.', async (ctx, h) => {
      await ctx.client.api.host.forget_data_source_archives(h.ref, reqParam(ctx, 'data-source'));
    }, ['data-source']),
  ];
}
