/** xe's everyday commands, with xe's names and argument names. */
import { callByName, CliError, ServerError } from './conn.ts';
import { type Command, type Ctx, flag, invoke, param, prefixedMap, reqParam, STD_PARAMS } from './context.ts';
import { NULL_REF, parseSize, XE_CLASSES, type XeClass } from './format.ts';
import { filtersOf, matches, printTable, selectRecords } from './generic.ts';
import { attachConsole, download, upload } from './transfer.ts';

type Rec = Record<string, unknown>;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const xc = (name: string): XeClass => XE_CLASSES.find((c) => c.name === name)!;

async function refOf(ctx: Ctx, cls: string, uuid: string): Promise<string> {
  return (await callByName(ctx.client, cls, 'get_by_uuid', uuid)) as string;
}

async function uuidOf(ctx: Ctx, cls: string, ref: string): Promise<string> {
  return (await callByName(ctx.client, cls, 'get_uuid', ref)) as string;
}

interface Selected {
  ref: string;
  rec: Rec;
}

/**
 * xe's selectors: `<name>=` (name-label or uuid), `uuid=`, or any field
 * filters; more than one match needs --multiple.
 */
async function select(ctx: Ctx, cmd: Command, kind: 'vm' | 'host'): Promise<Selected[]> {
  const own = new Set([...cmd.reqd, ...cmd.optn, ...STD_PARAMS, kind, 'uuid']);
  const filters = [...ctx.params].filter(([k]) => !own.has(k));
  const base = kind === 'vm' ? { ...xc('vm'), filters: [] } : xc('host');
  const name = param(ctx, kind);
  const uuid = param(ctx, 'uuid');
  let recs: [string, Rec][];
  if (uuid !== undefined || (name !== undefined && UUID_RE.test(name))) {
    const ref = await refOf(ctx, base.cls.name, (uuid ?? name)!);
    const rec = (await callByName(ctx.client, base.cls.name, 'get_record', ref)) as Rec;
    await ctx.res.prefetch(base.cls, [rec]);
    recs = [[ref, rec]].filter(([, r]) => filters.every(([k, v]) => matches(ctx, base.cls, r as Rec, k, v))) as [string, Rec][];
  } else {
    recs = await selectRecords(ctx, base, filters);
    if (name !== undefined) recs = recs.filter(([, r]) => r.name_label === name);
    // templates, snapshots and control domains are only chosen explicitly
    if (kind === 'vm') recs = recs.filter(([, r]) => !r.is_a_template && !r.is_control_domain || filters.some(([k]) => /template|control-domain|snapshot/.test(k)));
  }
  const noun = kind === 'vm' ? 'VMs' : 'hosts';
  if (recs.length === 0) throw new CliError(`No matching ${noun} found`);
  if (recs.length > 1 && !flag(ctx, 'multiple')) throw new CliError(`Multiple matches ${noun} found. --multiple required to complete the operation.`);
  return recs.map(([ref, rec]) => ({ ref, rec }));
}

/** Runs an operation on each selected object; with several, failures are reported per object. */
async function forEach(ctx: Ctx, objs: Selected[], op: (o: Selected) => Promise<void>): Promise<void> {
  if (objs.length === 1) return op(objs[0]);
  const failures: string[] = [];
  for (const o of objs) {
    try {
      await op(o);
    } catch (e) {
      const text = e instanceof ServerError ? [e.code, ...e.params].join(', ') : (e as Error).message;
      failures.push(`operation failed on ${String(o.rec.uuid)}: ${text}`);
    }
  }
  if (failures.length) {
    for (const f of failures) ctx.out(f + '\n');
    ctx.exitCode = 1;
  }
}

export function vmCmd(name: string, reqd: string[], optn: string[], help: string, op: (ctx: Ctx, vm: Selected) => Promise<void>): Command {
  const cmd: Command = {
    name, reqd, optn, help, vmSelectors: true,
    run: async (ctx) => forEach(ctx, await select(ctx, cmd, 'vm'), (vm) => op(ctx, vm)),
  };
  return cmd;
}

export function hostCmd(name: string, optn: string[], help: string, op: (ctx: Ctx, h: Selected) => Promise<void>, reqd: string[] = []): Command {
  const cmd: Command = {
    name, reqd, optn, help, hostSelectors: true,
    run: async (ctx) => forEach(ctx, await select(ctx, cmd, 'host'), (h) => op(ctx, h)),
  };
  return cmd;
}

function uuidCmd(name: string, cls: string, optn: string[], help: string, op: (ctx: Ctx, ref: string) => Promise<void>): Command {
  return { name, reqd: ['uuid'], optn, help, run: async (ctx) => op(ctx, await refOf(ctx, cls, reqParam(ctx, 'uuid'))) };
}

async function printUuid(ctx: Ctx, cls: string, ref: unknown): Promise<void> {
  ctx.out((await uuidOf(ctx, cls, String(ref))) + '\n');
}

async function defaultSr(ctx: Ctx): Promise<string> {
  const [pool] = (await ctx.client.api.pool.get_all()) as string[];
  const sr = pool ? ((await ctx.client.api.pool.get_default_SR(pool)) as string) : NULL_REF;
  return sr;
}

async function srArg(ctx: Ctx, required: boolean): Promise<string> {
  const uuid = param(ctx, 'sr-uuid');
  if (uuid) return refOf(ctx, 'SR', uuid);
  const label = param(ctx, 'sr-name-label');
  if (label !== undefined) {
    const srs = (await ctx.client.api.SR.get_by_name_label(label)) as string[];
    if (srs.length === 0) throw new CliError(`No SR with name-label '${label}' found`);
    return srs[0];
  }
  const sr = await defaultSr(ctx);
  if (required && (sr === NULL_REF || !sr)) throw new CliError('No sr-uuid given and the pool has no default SR');
  return sr;
}

function escapeXmlAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
}

async function vmInstall(ctx: Ctx): Promise<void> {
  const newName = reqParam(ctx, 'new-name-label');
  const tpl = param(ctx, 'template') ?? param(ctx, 'template-uuid') ?? param(ctx, 'template-name');
  if (tpl === undefined) throw new CliError('Required parameter not found: template', true);
  let tplRef: string | undefined;
  if (UUID_RE.test(tpl)) tplRef = await refOf(ctx, 'VM', tpl);
  else {
    const all = (await ctx.client.api.VM.get_by_name_label(tpl)) as string[];
    for (const r of all) if (await ctx.client.api.VM.get_is_a_template(r)) tplRef = tplRef ?? r;
  }
  if (!tplRef) throw new CliError(`Template '${tpl}' not found`);
  let vm: string;
  try {
    vm = (await ctx.client.api.VM.clone(tplRef, newName)) as string;
  } catch (e) {
    if (!(e instanceof ServerError && e.code === 'NOT_IMPLEMENTED')) throw e;
    // the server cannot clone yet: make the VM from the template's record
    const rec = await ctx.client.api.VM.get_record(tplRef);
    const { default_template: _dt, ...other_config } = rec.other_config;
    vm = (await ctx.client.api.VM.create({ ...rec, name_label: newName, is_a_template: false, other_config })) as string;
  }
  const other = (await ctx.client.api.VM.get_other_config(vm)) as Record<string, string>;
  const disks = other.disks ?? '';
  const hasDisks = /<disk\b/.test(disks);
  if (hasDisks) {
    const explicit = param(ctx, 'sr-uuid') !== undefined || param(ctx, 'sr-name-label') !== undefined;
    const sr = await srArg(ctx, false);
    if (explicit || sr !== NULL_REF) {
      const srUuid = await uuidOf(ctx, 'SR', sr);
      const rewritten = disks.replace(/(<disk\b[^>]*?\ssr=")[^"]*(")/g, `$1${escapeXmlAttr(srUuid)}$2`);
      await ctx.client.api.VM.remove_from_other_config(vm, 'disks');
      await ctx.client.api.VM.add_to_other_config(vm, 'disks', rewritten);
    }
    await ctx.client.api.VM.provision(vm);
  }
  if (await ctx.client.api.VM.get_is_a_template(vm)) await ctx.client.api.VM.set_is_a_template(vm, false);
  await printUuid(ctx, 'VM', vm);
}

async function confirm(ctx: Ctx, what: string): Promise<boolean> {
  if (flag(ctx, 'force')) return true;
  ctx.out(`${what}\nType 'yes' to continue\n`);
  const line = await new Promise<string>((resolve) => {
    let buf = '';
    const onData = (b: Buffer): void => {
      buf += b.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl >= 0) done(buf.slice(0, nl));
    };
    const done = (s: string): void => {
      process.stdin.off('data', onData);
      process.stdin.pause();
      resolve(s);
    };
    process.stdin.on('data', onData);
    process.stdin.once('end', () => done(buf));
  });
  if (line.trim().toLowerCase() !== 'yes') {
    ctx.out(`Aborted (you typed: '${line.trim()}')\n`);
    return false;
  }
  return true;
}

async function vmUninstall(ctx: Ctx, vm: Selected): Promise<void> {
  const vbds = vm.rec.VBDs as string[];
  const toDestroy: string[] = [];
  for (const vbd of vbds) {
    const r = await ctx.client.api.VBD.get_record(vbd);
    if (r.type !== 'Disk' || r.VDI === NULL_REF || r.mode !== 'RW') continue;
    const users = (await ctx.client.api.VDI.get_VBDs(r.VDI)) as string[];
    if (users.every((u) => vbds.includes(u))) toDestroy.push(String(r.VDI));
  }
  const lines = [`The following items are about to be destroyed`, `VM : ${String(vm.rec.uuid)} (${String(vm.rec.name_label)})`];
  for (const v of toDestroy) lines.push(`VDI: ${await uuidOf(ctx, 'VDI', v)}`);
  if (!(await confirm(ctx, lines.join('\n')))) {
    ctx.exitCode = 1;
    return;
  }
  if (vm.rec.power_state !== 'Halted') await ctx.client.api.VM.hard_shutdown(vm.ref);
  await ctx.client.api.VM.destroy(vm.ref);
  for (const v of toDestroy) await ctx.client.api.VDI.destroy(v);
  ctx.out('All objects destroyed\n');
}

async function cdVbds(ctx: Ctx, vm: Selected, empty: boolean): Promise<string[]> {
  const out: string[] = [];
  for (const vbd of vm.rec.VBDs as string[]) {
    const r = await ctx.client.api.VBD.get_record(vbd);
    if (r.type === 'CD' && r.empty === empty) out.push(vbd);
  }
  return out;
}

async function vdiByName(ctx: Ctx, name: string): Promise<string> {
  if (UUID_RE.test(name)) return refOf(ctx, 'VDI', name);
  const vdis = (await ctx.client.api.VDI.get_by_name_label(name)) as string[];
  if (vdis.length === 0) throw new CliError(`CD '${name}' not found`);
  if (vdis.length > 1) throw new CliError(`Multiple CDs named '${name}' found`);
  return vdis[0];
}

async function eventWait(ctx: Ctx): Promise<void> {
  const clsName = reqParam(ctx, 'class');
  const x = XE_CLASSES.find((c) => c.name === clsName.toLowerCase() || c.cls.name.toLowerCase() === clsName.toLowerCase());
  if (!x) throw new CliError(`Unknown class '${clsName}'`);
  const base = { ...x, filters: [] };
  const conds = filtersOf(ctx, ['class', 'timeout']);
  const timeout = param(ctx, 'timeout') !== undefined ? Number(param(ctx, 'timeout')) * 1000 : Infinity;
  const deadline = Date.now() + timeout;
  const first = (await ctx.client.api.event.from([x.cls.name], '', 0)) as { token: string };
  let token = first.token;
  for (;;) {
    const recs = await selectRecords(ctx, base, []);
    if (recs.some(([, r]) => conds.every(([k, v]) => matches(ctx, x.cls, r, k, v)))) return;
    let changed = false;
    while (!changed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new CliError('Timed out waiting for the event');
      const batch = (await ctx.client.api.event.from([x.cls.name], token, Math.min(30, left / 1000))) as { token: string; events: unknown[] };
      token = batch.token;
      changed = batch.events.length > 0;
    }
  }
}

export function specificCommands(): Command[] {
  const vmSel = (name: string, help: string, optn: string[], op: (ctx: Ctx, vm: Selected) => Promise<void>): Command => vmCmd(name, [], optn, help, op);
  return [
    {
      name: 'vm-install', reqd: ['new-name-label'], optn: ['template', 'sr-name-label', 'sr-uuid', 'copy-bios-strings-from'],
      help: 'Installs a new VM from a template (template= is its name or uuid); prints the new VM\'s uuid.',
      run: vmInstall,
    },
    vmSel('vm-start', 'Starts the selected VM(s).', ['force', 'paused', 'on'], async (ctx, vm) => {
      const on = param(ctx, 'on');
      if (on !== undefined) {
        const hosts = UUID_RE.test(on) ? [await refOf(ctx, 'host', on)] : ((await ctx.client.api.host.get_by_name_label(on)) as string[]);
        if (!hosts.length) throw new CliError(`Host '${on}' not found`);
        await invoke(ctx, 'VM', 'start_on', { vm: vm.ref, host: hosts[0], start_paused: flag(ctx, 'paused'), force: flag(ctx, 'force') });
      } else await invoke(ctx, 'VM', 'start', { vm: vm.ref, start_paused: flag(ctx, 'paused'), force: flag(ctx, 'force') });
    }),
    vmSel('vm-shutdown', 'Shuts down the selected VM(s); --force pulls the plug.', ['force'], async (ctx, vm) => {
      await (flag(ctx, 'force') ? ctx.client.api.VM.hard_shutdown : ctx.client.api.VM.clean_shutdown)(vm.ref);
    }),
    vmSel('vm-reboot', 'Reboots the selected VM(s); --force resets them.', ['force'], async (ctx, vm) => {
      await (flag(ctx, 'force') ? ctx.client.api.VM.hard_reboot : ctx.client.api.VM.clean_reboot)(vm.ref);
    }),
    vmSel('vm-suspend', 'Suspends the selected VM(s).', [], async (ctx, vm) => void (await ctx.client.api.VM.suspend(vm.ref))),
    vmSel('vm-resume', 'Resumes the selected VM(s).', ['force', 'on'], async (ctx, vm) => {
      await invoke(ctx, 'VM', 'resume', { vm: vm.ref, start_paused: false, force: flag(ctx, 'force') });
    }),
    vmSel('vm-pause', 'Pauses the selected VM(s).', [], async (ctx, vm) => void (await ctx.client.api.VM.pause(vm.ref))),
    vmSel('vm-unpause', 'Unpauses the selected VM(s).', [], async (ctx, vm) => void (await ctx.client.api.VM.unpause(vm.ref))),
    vmCmd('vm-snapshot', ['new-name-label'], ['new-name-description'], 'Snapshots the selected VM(s); prints the snapshot\'s uuid.', async (ctx, vm) => {
      const s = await invoke(ctx, 'VM', 'snapshot', { vm: vm.ref, new_name: reqParam(ctx, 'new-name-label'), ignore_vdis: [] });
      const d = param(ctx, 'new-name-description');
      if (d !== undefined) await ctx.client.api.VM.set_name_description(String(s), d);
      await printUuid(ctx, 'VM', s);
    }),
    vmCmd('vm-clone', ['new-name-label'], ['new-name-description'], 'Clones the selected VM(s) with fast disk clones; prints the new uuid.', async (ctx, vm) => {
      const c = await ctx.client.api.VM.clone(vm.ref, reqParam(ctx, 'new-name-label'));
      const d = param(ctx, 'new-name-description');
      if (d !== undefined) await ctx.client.api.VM.set_name_description(c, d);
      await printUuid(ctx, 'VM', c);
    }),
    vmCmd('vm-copy', ['new-name-label'], ['new-name-description', 'sr-uuid'], 'Copies the selected VM(s) with full disk copies; prints the new uuid.', async (ctx, vm) => {
      const sr = param(ctx, 'sr-uuid') ? await refOf(ctx, 'SR', param(ctx, 'sr-uuid')!) : NULL_REF;
      const c = await ctx.client.api.VM.copy(vm.ref, reqParam(ctx, 'new-name-label'), sr);
      const d = param(ctx, 'new-name-description');
      if (d !== undefined) await ctx.client.api.VM.set_name_description(c, d);
      await printUuid(ctx, 'VM', c);
    }),
    ...['snapshot-revert', 'vm-revert'].map((name): Command => ({
      name, reqd: [], optn: ['uuid', 'snapshot-uuid'],
      help: name === 'vm-revert' ? 'Same as snapshot-revert.' : 'Reverts a VM to the snapshot snapshot-uuid= (or uuid=).',
      run: async (ctx) => {
        const uuid = param(ctx, 'snapshot-uuid') ?? param(ctx, 'uuid');
        if (uuid === undefined) throw new CliError('Required parameter not found: snapshot-uuid', true);
        await ctx.client.api.VM.revert(await refOf(ctx, 'VM', uuid));
      },
    })),
    vmSel('vm-uninstall', 'Destroys the selected VM(s) and the disks only they use; asks first unless --force.', ['force'], vmUninstall),
    vmSel('vm-destroy', 'Destroys the selected VM record(s), keeping their disks.', [], async (ctx, vm) => void (await ctx.client.api.VM.destroy(vm.ref))),
    vmSel('vm-migrate', 'Migrates the selected VM(s) to another host of the pool.', ['live', 'host', 'host-uuid'], async (ctx, vm) => {
      const h = param(ctx, 'host-uuid') ?? param(ctx, 'host');
      if (h === undefined) throw new CliError('Required parameter not found: host', true);
      const host = UUID_RE.test(h) ? await refOf(ctx, 'host', h) : ((await ctx.client.api.host.get_by_name_label(h)) as string[])[0];
      if (!host) throw new CliError(`Host '${h}' not found`);
      await ctx.client.api.VM.pool_migrate(vm.ref, host, { live: flag(ctx, 'live') ? 'true' : 'false' });
    }),
    vmCmd('vm-export', ['filename'], ['compress', 'preserve-power-state', 'metadata'], 'Exports the selected VM to filename= (GET /export).', async (ctx, vm) => {
      const extra: Record<string, string> = { uuid: String(vm.rec.uuid) };
      if (param(ctx, 'compress')) extra.compress = param(ctx, 'compress')!;
      if (flag(ctx, 'preserve-power-state')) extra.preserve_power_state = 'true';
      await download(ctx, flag(ctx, 'metadata') ? '/export_metadata' : '/export', extra, reqParam(ctx, 'filename'), `Exporting ${String(vm.rec.name_label)}`);
    }),
    {
      name: 'vm-import', reqd: ['filename'], optn: ['sr-uuid', 'preserve', 'force'],
      help: 'Imports a VM from filename= (PUT /import); prints the new VM uuids.',
      run: async (ctx) => {
        const sr = await srArg(ctx, false);
        const extra: Record<string, string> = { sr_id: sr, restore: String(flag(ctx, 'preserve')), force: String(flag(ctx, 'force')) };
        const result = await upload(ctx, '/import', extra, reqParam(ctx, 'filename'), 'Importing');
        const refs = [...result.matchAll(/OpaqueRef:[0-9a-f-]+/gi)].map((m) => m[0]);
        ctx.out((await Promise.all(refs.map((r) => uuidOf(ctx, 'VM', r)))).join(',') + '\n');
      },
    },
    vmCmd('vm-cd-insert', ['cd-name'], [], 'Inserts the CD cd-name= into the empty CD drive of the selected VM(s).', async (ctx, vm) => {
      const vdi = await vdiByName(ctx, reqParam(ctx, 'cd-name'));
      const drives = await cdVbds(ctx, vm, true);
      if (drives.length === 0) throw new CliError('No empty CD devices found');
      if (drives.length > 1) throw new CliError('Two or more empty CD devices found. Please use vbd-insert');
      await ctx.client.api.VBD.insert(drives[0], vdi);
    }),
    vmSel('vm-cd-eject', 'Ejects the CD of the selected VM(s).', [], async (ctx, vm) => {
      const drives = await cdVbds(ctx, vm, false);
      if (drives.length === 0) throw new CliError('No CDs found');
      if (drives.length > 1) throw new CliError('Two or more CDs found. Please use vbd-eject');
      await ctx.client.api.VBD.eject(drives[0]);
    }),
    vmCmd('vm-disk-add', ['disk-size', 'device'], ['sr-uuid'], 'Adds a new disk of disk-size= at device= to the selected VM(s).', async (ctx, vm) => {
      const sr = await srArg(ctx, true);
      const size = parseSize(reqParam(ctx, 'disk-size'), 'disk-size');
      const device = reqParam(ctx, 'device');
      const vdi = await callByName(ctx.client, 'VDI', 'create', {
        name_label: `${String(vm.rec.name_label)} ${device}`, name_description: 'Created by xe', SR: sr, virtual_size: size,
        type: 'user', sharable: false, read_only: false, other_config: {}, xenstore_data: {}, sm_config: {}, tags: [],
      });
      const vbd = await callByName(ctx.client, 'VBD', 'create', {
        VM: vm.ref, VDI: vdi, userdevice: device, bootable: false, mode: 'RW', type: 'Disk', unpluggable: true, empty: false,
        other_config: { owner: 'true' }, qos_algorithm_type: '', qos_algorithm_params: {}, device: '',
      });
      if (vm.rec.power_state === 'Running') await ctx.client.api.VBD.plug(String(vbd));
    }),
    vmSel('vm-vif-list', 'Lists the VIFs of the selected VM(s).', ['params'], async (ctx, vm) => {
      const vifs = xc('vif');
      const recs = await Promise.all((vm.rec.VIFs as string[]).map(async (v) => ({ ...(await ctx.client.api.VIF.get_record(v)) })));
      await ctx.res.prefetch(vifs.cls, recs);
      printTable(ctx, vifs, recs, ['uuid', 'vm-uuid', 'device', 'network-uuid', 'MAC'].map((n) => vifs.cls.fields.find((f) => f.name === n || (n === 'vm-uuid' && f.name === 'VM') || (n === 'network-uuid' && f.name === 'network'))!).filter(Boolean));
    }),
    {
      name: 'console', reqd: [], optn: [], vmSelectors: true,
      help: 'Attaches the terminal to the text console of the selected VM (Ctrl-] detaches).',
      run: async function (this: void, ctx) {
        const [vm] = await select(ctx, consoleCmd, 'vm');
        let con: string | undefined;
        for (const c of vm.rec.consoles as string[]) if ((await ctx.client.api.console.get_protocol(c)) === 'vt100') con = c;
        if (!con) throw new CliError('No text console available');
        await attachConsole(ctx, con);
      },
    },
    // storage
    {
      name: 'vdi-create', reqd: ['sr-uuid', 'name-label', 'virtual-size'], optn: ['sm-config:', 'sharable', 'tags:', 'type', 'name-description', 'read-only'],
      help: 'Creates a VDI; prints its uuid.',
      run: async (ctx) => {
        const vdi = await callByName(ctx.client, 'VDI', 'create', {
          name_label: reqParam(ctx, 'name-label'), name_description: param(ctx, 'name-description') ?? '', SR: await refOf(ctx, 'SR', reqParam(ctx, 'sr-uuid')),
          virtual_size: parseSize(reqParam(ctx, 'virtual-size'), 'virtual-size'), type: param(ctx, 'type') ?? 'user', sharable: flag(ctx, 'sharable'),
          read_only: flag(ctx, 'read-only'), other_config: {}, xenstore_data: {}, sm_config: prefixedMap(ctx, 'sm-config'), tags: Object.values(prefixedMap(ctx, 'tags')),
        });
        await printUuid(ctx, 'VDI', vdi);
      },
    },
    uuidCmd('vdi-destroy', 'VDI', [], 'Destroys a VDI.', async (ctx, r) => void (await ctx.client.api.VDI.destroy(r))),
    uuidCmd('vdi-forget', 'VDI', [], 'Forgets a VDI, leaving its data.', async (ctx, r) => void (await ctx.client.api.VDI.forget(r))),
    uuidCmd('vdi-resize', 'VDI', ['disk-size', 'online'], 'Resizes a VDI to disk-size=.', async (ctx, r) => {
      await (flag(ctx, 'online') ? ctx.client.api.VDI.resize_online : ctx.client.api.VDI.resize)(r, parseSize(reqParam(ctx, 'disk-size'), 'disk-size'));
    }),
    uuidCmd('vdi-snapshot', 'VDI', ['driver-params:'], 'Snapshots a VDI; prints the snapshot\'s uuid.', async (ctx, r) => {
      await printUuid(ctx, 'VDI', await ctx.client.api.VDI.snapshot(r, prefixedMap(ctx, 'driver-params')));
    }),
    uuidCmd('vdi-clone', 'VDI', ['driver-params:', 'new-name-label', 'new-name-description'], 'Clones a VDI; prints the clone\'s uuid.', async (ctx, r) => {
      const c = await ctx.client.api.VDI.clone(r, prefixedMap(ctx, 'driver-params'));
      const label = param(ctx, 'new-name-label');
      const description = param(ctx, 'new-name-description');
      if (label !== undefined) await ctx.client.api.VDI.set_name_label(c, label);
      if (description !== undefined) await ctx.client.api.VDI.set_name_description(c, description);
      await printUuid(ctx, 'VDI', c);
    }),
    uuidCmd('vdi-copy', 'VDI', ['sr-uuid', 'base-vdi-uuid', 'into-vdi-uuid'], 'Copies a VDI into sr-uuid= (or into-vdi-uuid=); prints the copy\'s uuid.', async (ctx, r) => {
      const opt = async (p: string, cls: string): Promise<string> => (param(ctx, p) ? refOf(ctx, cls, param(ctx, p)!) : NULL_REF);
      const c = await invoke(ctx, 'VDI', 'copy', { vdi: r, sr: await opt('sr-uuid', 'SR'), base_vdi: await opt('base-vdi-uuid', 'VDI'), into_vdi: await opt('into-vdi-uuid', 'VDI') });
      await printUuid(ctx, 'VDI', c);
    }),
    uuidCmd('vdi-import', 'VDI', ['filename', 'format'], 'Uploads filename= into a VDI (PUT /import_raw_vdi; format=raw|vhd).', async (ctx, r) => {
      await upload(ctx, '/import_raw_vdi', { vdi: r, format: param(ctx, 'format') ?? 'raw' }, reqParam(ctx, 'filename'), 'Importing');
    }),
    uuidCmd('vdi-export', 'VDI', ['filename', 'format'], 'Downloads a VDI into filename= (GET /export_raw_vdi; format=raw|vhd).', async (ctx, r) => {
      await download(ctx, '/export_raw_vdi', { vdi: r, format: param(ctx, 'format') ?? 'raw' }, reqParam(ctx, 'filename'), 'Exporting');
    }),
    {
      name: 'sr-create', reqd: ['name-label', 'type'], optn: ['name-description', 'host-uuid', 'device-config:', 'shared', 'physical-size', 'content-type', 'sm-config:'],
      help: 'Creates an SR; prints its uuid.',
      run: async (ctx) => {
        const host = param(ctx, 'host-uuid') ? await refOf(ctx, 'host', param(ctx, 'host-uuid')!) : ((await ctx.client.api.host.get_all()) as string[])[0];
        const sr = await invoke(ctx, 'SR', 'create', {
          host, device_config: prefixedMap(ctx, 'device-config'), physical_size: param(ctx, 'physical-size') ? parseSize(param(ctx, 'physical-size')!, 'physical-size') : 0,
          name_label: reqParam(ctx, 'name-label'), name_description: param(ctx, 'name-description') ?? '', type: reqParam(ctx, 'type'),
          content_type: param(ctx, 'content-type') ?? '', shared: flag(ctx, 'shared'), sm_config: prefixedMap(ctx, 'sm-config'),
        });
        await printUuid(ctx, 'SR', sr);
      },
    },
    uuidCmd('sr-destroy', 'SR', [], 'Destroys an SR and its contents.', async (ctx, r) => void (await ctx.client.api.SR.destroy(r))),
    uuidCmd('sr-forget', 'SR', [], 'Forgets an SR, leaving its contents.', async (ctx, r) => void (await ctx.client.api.SR.forget(r))),
    uuidCmd('sr-scan', 'SR', [], 'Rescans an SR for VDIs.', async (ctx, r) => void (await ctx.client.api.SR.scan(r))),
    uuidCmd('pbd-plug', 'PBD', [], 'Plugs a PBD (attaches its SR on its host).', async (ctx, r) => void (await ctx.client.api.PBD.plug(r))),
    uuidCmd('pbd-unplug', 'PBD', [], 'Unplugs a PBD.', async (ctx, r) => void (await ctx.client.api.PBD.unplug(r))),
    // network
    {
      name: 'network-create', reqd: ['name-label'], optn: ['name-description', 'MTU', 'bridge', 'managed'],
      help: 'Creates a network; prints its uuid.',
      run: async (ctx) => {
        const rec: Rec = { name_label: reqParam(ctx, 'name-label'), name_description: param(ctx, 'name-description') ?? '', other_config: {}, tags: [] };
        if (param(ctx, 'MTU') !== undefined) rec.MTU = Number(param(ctx, 'MTU'));
        if (param(ctx, 'bridge') !== undefined) rec.bridge = param(ctx, 'bridge');
        if (param(ctx, 'managed') !== undefined) rec.managed = flag(ctx, 'managed');
        await printUuid(ctx, 'network', await callByName(ctx.client, 'network', 'create', rec));
      },
    },
    uuidCmd('network-destroy', 'network', [], 'Destroys a network.', async (ctx, r) => void (await ctx.client.api.network.destroy(r))),
    {
      name: 'vif-create', reqd: ['device', 'network-uuid', 'vm-uuid'], optn: ['mac', 'mtu'],
      help: 'Creates a VIF; prints its uuid. Without mac= the server picks one.',
      run: async (ctx) => {
        const rec: Rec = {
          device: reqParam(ctx, 'device'), network: await refOf(ctx, 'network', reqParam(ctx, 'network-uuid')), VM: await refOf(ctx, 'VM', reqParam(ctx, 'vm-uuid')),
          MAC: param(ctx, 'mac') ?? '', MTU: Number(param(ctx, 'mtu') ?? 1500), other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {},
        };
        await printUuid(ctx, 'VIF', await callByName(ctx.client, 'VIF', 'create', rec));
      },
    },
    uuidCmd('vif-destroy', 'VIF', [], 'Destroys a VIF.', async (ctx, r) => void (await ctx.client.api.VIF.destroy(r))),
    uuidCmd('vif-plug', 'VIF', [], 'Hot-plugs a VIF into its running VM.', async (ctx, r) => void (await ctx.client.api.VIF.plug(r))),
    uuidCmd('vif-unplug', 'VIF', ['force'], 'Hot-unplugs a VIF.', async (ctx, r) => void (await (flag(ctx, 'force') ? ctx.client.api.VIF.unplug_force : ctx.client.api.VIF.unplug)(r))),
    {
      name: 'vlan-create', reqd: ['pif-uuid', 'vlan', 'network-uuid'], optn: [],
      help: 'Creates a VLAN on a PIF; prints the uuid of the new VLAN PIF.',
      run: async (ctx) => {
        const tag = Number(reqParam(ctx, 'vlan'));
        if (!Number.isInteger(tag) || tag < 0 || tag > 4094) throw new CliError(`Invalid VLAN tag '${reqParam(ctx, 'vlan')}'`);
        const vlan = await invoke(ctx, 'VLAN', 'create', { tagged_PIF: await refOf(ctx, 'PIF', reqParam(ctx, 'pif-uuid')), tag, network: await refOf(ctx, 'network', reqParam(ctx, 'network-uuid')) });
        await printUuid(ctx, 'PIF', await ctx.client.api.VLAN.get_untagged_PIF(String(vlan)));
      },
    },
    uuidCmd('vlan-destroy', 'VLAN', [], 'Destroys a VLAN.', async (ctx, r) => void (await ctx.client.api.VLAN.destroy(r))),
    {
      name: 'tunnel-create', reqd: ['pif-uuid', 'network-uuid'], optn: ['protocol'],
      help: 'Creates a tunnel (gre or vxlan, default gre) carrying a network over a PIF; prints the uuid of the new tunnel access PIF.',
      run: async (ctx) => {
        const protocol = param(ctx, 'protocol') ?? 'gre';
        if (protocol !== 'gre' && protocol !== 'vxlan') throw new CliError(`Invalid tunnel protocol '${protocol}' (gre or vxlan)`);
        const tunnel = await invoke(ctx, 'tunnel', 'create', { transport_PIF: await refOf(ctx, 'PIF', reqParam(ctx, 'pif-uuid')), network: await refOf(ctx, 'network', reqParam(ctx, 'network-uuid')), protocol });
        await printUuid(ctx, 'PIF', await ctx.client.api.tunnel.get_access_PIF(String(tunnel)));
      },
    },
    uuidCmd('tunnel-destroy', 'tunnel', [], 'Destroys a tunnel and its access PIF.', async (ctx, r) => void (await ctx.client.api.tunnel.destroy(r))),
    // pool and hosts
    {
      name: 'pool-join', reqd: ['master-address', 'master-username', 'master-password'], optn: ['force'],
      help: 'Makes this host join the pool of master-address=.',
      run: async (ctx) => {
        await (flag(ctx, 'force') ? ctx.client.api.pool.join_force : ctx.client.api.pool.join)(reqParam(ctx, 'master-address'), reqParam(ctx, 'master-username'), reqParam(ctx, 'master-password'));
      },
    },
    {
      name: 'pool-eject', reqd: ['host-uuid'], optn: ['force'],
      help: 'Ejects a host from the pool (its local data is wiped).',
      run: async (ctx) => {
        const host = await refOf(ctx, 'host', reqParam(ctx, 'host-uuid'));
        if (await confirm(ctx, 'WARNING: Ejecting a host from the pool will reinitialise that host to default state.')) await ctx.client.api.pool.eject(host);
        else ctx.exitCode = 1;
      },
    },
    {
      name: 'pool-designate-new-master', reqd: ['host-uuid'], optn: [],
      help: 'Makes the given member the pool master (this master becomes a member of it).',
      run: async (ctx) => void (await ctx.client.api.pool.designate_new_master(await refOf(ctx, 'host', reqParam(ctx, 'host-uuid')))),
    },
    {
      name: 'pool-emergency-transition-to-master', reqd: [], optn: [],
      help: 'Run on a pool member whose master is gone: it becomes the master, with its copy of the database.',
      run: async (ctx) => void (await ctx.client.api.pool.emergency_transition_to_master()),
    },
    {
      name: 'pool-emergency-reset-master', reqd: ['master-address'], optn: [],
      help: 'Run on a pool member: it follows the master at master-address= from now on.',
      run: async (ctx) => void (await ctx.client.api.pool.emergency_reset_master(reqParam(ctx, 'master-address'))),
    },
    {
      name: 'pool-recover-slaves', reqd: [], optn: [],
      help: 'Run on a new master: tells every other host to follow it; prints the hosts that did.',
      run: async (ctx) => {
        for (const h of await ctx.client.api.pool.recover_slaves()) await printUuid(ctx, 'host', h);
      },
    },
    hostCmd('host-evacuate', ['network-uuid', 'batch-size'], 'Migrates all VMs off the selected host(s).', async (ctx, h) => {
      const network = param(ctx, 'network-uuid') ? await refOf(ctx, 'network', param(ctx, 'network-uuid')!) : NULL_REF;
      await invoke(ctx, 'host', 'evacuate', { host: h.ref, network, evacuate_batch_size: Number(param(ctx, 'batch-size') ?? 0) });
    }),
    hostCmd('host-enable', [], 'Enables the selected host(s) for new VMs.', async (ctx, h) => void (await ctx.client.api.host.enable(h.ref))),
    hostCmd('host-disable', [], 'Disables the selected host(s): no new VMs start there.', async (ctx, h) => void (await ctx.client.api.host.disable(h.ref))),
    uuidCmd('task-cancel', 'task', [], 'Cancels a task.', async (ctx, r) => void (await ctx.client.api.task.cancel(r))),
    {
      name: 'event-wait', reqd: ['class'], optn: ['timeout'], freeParams: true,
      help: 'Waits until an object of class= satisfies every field=value (or field=/=value) condition. timeout= (seconds) is a Xenon addition.',
      run: eventWait,
    },
  ];
}

const consoleCmd: Command = { name: 'console', reqd: [], optn: [], help: '', vmSelectors: true, run: async () => undefined };
