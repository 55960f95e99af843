/** network, VIF, PIF, VLAN and Bond: virtual switches, guest NICs, host NICs. */
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { Args, CallContext, HandlerTable } from './context.ts';
import { creatableFields, setField } from './generic.ts';
import type { Networking } from './networking.ts';
import { xenopsOf } from './vm.ts';
import { randomMac } from './xenops.ts';

export function networkingOf(ctx: CallContext): Networking {
  const n = ctx.services.ext.networking as Networking | undefined;
  if (!n) throw new XenApiError('NOT_IMPLEMENTED', 'no networking on this host');
  return n;
}

const selfArg = (a: Args): string => a.self as string;
const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;
const running = (power: unknown): boolean => power === 'Running' || power === 'Paused';

export const networkHandlers: HandlerTable = {
  create: async (ctx, a) => {
    const f = creatableFields('network', a.args as Args);
    const n = ctx.services.ext.networking as Networking | undefined;
    const bridge = String(f.bridge ?? '') || (n ? n.nextBridgeName() : `xapi${ctx.services.store.count('network')}`);
    const ref = ctx.services.store.transact((tx) => tx.create('network', { MTU: 1500, ...f, bridge, managed: f.managed ?? true }));
    await n?.ensureNetwork(ref);
    return ref;
  },
  destroy: async (ctx, a) => {
    const { store } = ctx.services;
    const net = store.must('network', selfArg(a));
    if ((net.PIFs as string[]).some((p) => store.get('PIF', p)?.physical === true)) throw new XenApiError('CANNOT_DESTROY_SYSTEM_NETWORK', selfArg(a));
    if ((net.PIFs as string[]).length) throw new XenApiError('NETWORK_CONTAINS_PIF', ...(net.PIFs as string[]));
    const n = ctx.services.ext.networking as Networking | undefined;
    n?.assertNoActiveVifs(selfArg(a));
    store.transact((tx) => {
      for (const vif of net.VIFs as string[]) if (tx.get('VIF', vif)) tx.delete('VIF', vif);
      tx.delete('network', selfArg(a));
    });
    await n?.backend.removeBridge(String(net.bridge)).catch(() => undefined);
  },
  set_default_locking_mode: setField('default_locking_mode'),
  add_purpose: (ctx, a) => {
    const cur = ctx.services.store.must('network', selfArg(a)).purpose as string[];
    if (!cur.includes(a.value as string)) ctx.services.store.transact((tx) => tx.update('network', selfArg(a), { purpose: [...cur, a.value] }));
  },
  remove_purpose: (ctx, a) => {
    const cur = ctx.services.store.must('network', selfArg(a)).purpose as string[];
    ctx.services.store.transact((tx) => tx.update('network', selfArg(a), { purpose: cur.filter((p) => p !== a.value) }));
  },
};

async function plugVif(ctx: CallContext, ref: string): Promise<void> {
  const { store } = ctx.services;
  const vif = store.must('VIF', ref);
  const vm = store.must('VM', String(vif.VM));
  if (!running(vm.power_state)) throw new XenApiError('VM_BAD_POWER_STATE', String(vif.VM), 'running', String(vm.power_state).toLowerCase());
  if (vif.currently_attached) throw new XenApiError('DEVICE_ALREADY_ATTACHED', ref);
  const where = await networkingOf(ctx).plug(ref);
  await xenopsOf(ctx).backend.plugNic(String(vm.uuid), { id: String(vif.uuid), device: String(vif.device), mac: String(vif.MAC), ...where, model: 'virtio-net-pci' });
  store.transact((tx) => tx.update('VIF', ref, { currently_attached: true }));
}

async function unplugVif(ctx: CallContext, ref: string): Promise<void> {
  const { store } = ctx.services;
  const vif = store.must('VIF', ref);
  const vm = store.must('VM', String(vif.VM));
  if (!vif.currently_attached || !running(vm.power_state)) throw new XenApiError('DEVICE_ALREADY_DETACHED', ref);
  await xenopsOf(ctx).backend.unplugNic(String(vm.uuid), String(vif.uuid));
  await networkingOf(ctx).unplug(ref);
  store.transact((tx) => tx.update('VIF', ref, { currently_attached: false }));
}

const vifSetter = (field: string) => async (ctx: CallContext, a: Args): Promise<void> => {
  ctx.services.store.transact((tx) => tx.update('VIF', selfArg(a), { [field]: a.value }));
  await (ctx.services.ext.networking as Networking | undefined)?.applyLocking(selfArg(a));
};

const vifSetMember = (field: 'ipv4_allowed' | 'ipv6_allowed', add: boolean) => async (ctx: CallContext, a: Args): Promise<void> => {
  const cur = ctx.services.store.must('VIF', selfArg(a))[field] as string[];
  const next = add ? [...new Set([...cur, a.value as string])] : cur.filter((x) => x !== a.value);
  await vifSetter(field)(ctx, { ...a, value: next });
};

export const vifHandlers: HandlerTable = {
  create: (ctx, a) => {
    const { store } = ctx.services;
    const f = creatableFields('VIF', a.args as Args);
    const vm = store.must('VM', String(f.VM ?? NULL_REF));
    store.must('network', String(f.network ?? NULL_REF));
    const mac = String(f.MAC ?? '');
    if (mac !== '' && !MAC_RE.test(mac)) throw new XenApiError('MAC_INVALID', mac);
    const used = new Set((vm.VIFs as string[]).map((v) => String(store.get('VIF', v)?.device)));
    const device = String(f.device ?? '') || String([...Array(7).keys()].find((i) => !used.has(String(i))));
    if (used.has(device)) throw new XenApiError('DEVICE_ALREADY_EXISTS', device);
    return store.transact((tx) => {
      const metrics = tx.create('VIF_metrics', { last_updated: formatDateTime(new Date()) });
      return tx.create('VIF', { MTU: 1500, ...f, device, MAC: mac || randomMac(), MAC_autogenerated: mac === '', currently_attached: false, metrics, allowed_operations: ['attach'] });
    });
  },
  destroy: (ctx, a) => {
    const { store } = ctx.services;
    const vif = store.must('VIF', selfArg(a));
    const vm = store.get('VM', String(vif.VM));
    if (vif.currently_attached && running(vm?.power_state)) throw new XenApiError('OPERATION_NOT_ALLOWED', 'the VIF is plugged into a running VM: unplug it first');
    store.transact((tx) => {
      if (vif.metrics !== NULL_REF && tx.get('VIF_metrics', String(vif.metrics))) tx.delete('VIF_metrics', String(vif.metrics));
      tx.delete('VIF', selfArg(a));
    });
  },
  plug: (ctx, a) => plugVif(ctx, selfArg(a)),
  unplug: (ctx, a) => unplugVif(ctx, selfArg(a)),
  unplug_force: (ctx, a) => unplugVif(ctx, selfArg(a)),
  move: async (ctx, a) => {
    const { store } = ctx.services;
    const vif = store.must('VIF', selfArg(a));
    store.must('network', a.network as string);
    const attached = vif.currently_attached === true && running(store.get('VM', String(vif.VM))?.power_state);
    if (attached) await unplugVif(ctx, selfArg(a));
    store.transact((tx) => tx.update('VIF', selfArg(a), { network: a.network }));
    if (attached) await plugVif(ctx, selfArg(a));
  },
  set_locking_mode: vifSetter('locking_mode'),
  set_ipv4_allowed: vifSetter('ipv4_allowed'),
  set_ipv6_allowed: vifSetter('ipv6_allowed'),
  add_ipv4_allowed: vifSetMember('ipv4_allowed', true),
  remove_ipv4_allowed: vifSetMember('ipv4_allowed', false),
  add_ipv6_allowed: vifSetMember('ipv6_allowed', true),
  remove_ipv6_allowed: vifSetMember('ipv6_allowed', false),
  configure_ipv4: (ctx, a) => ctx.services.store.transact((tx) => void tx.update('VIF', selfArg(a), { ipv4_configuration_mode: a.mode, ipv4_addresses: a.address ? [a.address] : [], ipv4_gateway: a.gateway })),
  configure_ipv6: (ctx, a) => ctx.services.store.transact((tx) => void tx.update('VIF', selfArg(a), { ipv6_configuration_mode: a.mode, ipv6_addresses: a.address ? [a.address] : [], ipv6_gateway: a.gateway })),
};

export const vlanHandlers: HandlerTable = {
  create: async (ctx, a) => {
    const { store } = ctx.services;
    const tagged = store.must('PIF', a.tagged_PIF as string);
    const tag = Number(a.tag);
    if (!Number.isInteger(tag) || tag < 0 || tag > 4094) throw new XenApiError('VLAN_TAG_INVALID', String(a.tag));
    if (Number(tagged.VLAN) >= 0) throw new XenApiError('PIF_IS_VLAN', a.tagged_PIF as string);
    const net = store.must('network', a.network as string);
    if ((net.PIFs as string[]).some((p) => store.get('PIF', p)?.host === tagged.host)) throw new XenApiError('NETWORK_ALREADY_CONNECTED', a.network as string, (net.PIFs as string[])[0]);
    if (store.where('VLAN', (v) => v.tagged_PIF === a.tagged_PIF && v.tag === tag).length) throw new XenApiError('PIF_VLAN_EXISTS', String(tagged.device));
    const vlan = store.transact((tx) => {
      const metrics = tx.create('PIF_metrics', { carrier: true, last_updated: formatDateTime(new Date()) });
      const untagged = tx.create('PIF', {
        device: tagged.device, network: a.network, host: tagged.host, MAC: tagged.MAC, MTU: tagged.MTU, VLAN: tag, metrics,
        physical: false, currently_attached: true, ip_configuration_mode: 'None', managed: true,
      });
      const v = tx.create('VLAN', { tagged_PIF: a.tagged_PIF, untagged_PIF: untagged, tag });
      tx.update('PIF', untagged, { VLAN_master_of: v });
      return v;
    });
    const n = ctx.services.ext.networking as Networking | undefined;
    if (n) {
      // the network's plain bridge (it has no ports yet) becomes a VLAN bridge on the PIF's
      await n.backend.removeBridge(String(net.bridge)).catch(() => undefined);
      await n.ensureNetwork(a.network as string);
    }
    return vlan;
  },
  destroy: async (ctx, a) => {
    const { store } = ctx.services;
    const vlan = store.must('VLAN', selfArg(a));
    const untagged = store.get('PIF', String(vlan.untagged_PIF));
    const n = ctx.services.ext.networking as Networking | undefined;
    if (untagged) n?.assertNoActiveVifs(String(untagged.network));
    const bridge = untagged ? String(store.get('network', String(untagged.network))?.bridge ?? '') : '';
    store.transact((tx) => {
      if (untagged) {
        if (untagged.metrics !== NULL_REF && tx.get('PIF_metrics', String(untagged.metrics))) tx.delete('PIF_metrics', String(untagged.metrics));
        tx.delete('PIF', String(vlan.untagged_PIF));
      }
      tx.delete('VLAN', selfArg(a));
    });
    if (bridge && n && untagged) {
      await n.backend.removeBridge(bridge).catch(() => undefined);
      await n.ensureNetwork(String(untagged.network)); // back to a plain, host-internal bridge
    }
  },
};

export const pifHandlers: HandlerTable = {
  reconfigure_ip: async (ctx, a) => {
    const mode = String(a.mode);
    if (mode === 'Static' && !/^\d+\.\d+\.\d+\.\d+$/.test(String(a.IP))) throw new XenApiError('INVALID_IP_ADDRESS_SPECIFIED', 'IP');
    ctx.services.store.transact((tx) => tx.update('PIF', selfArg(a), { ip_configuration_mode: mode, IP: mode === 'Static' ? a.IP : '', netmask: mode === 'Static' ? a.netmask : '', gateway: a.gateway, DNS: a.DNS }));
    await (ctx.services.ext.networking as Networking | undefined)?.applyIp(selfArg(a));
  },
  plug: (ctx, a) => ctx.services.store.transact((tx) => void tx.update('PIF', selfArg(a), { currently_attached: true })),
  unplug: (ctx, a) => {
    const pif = ctx.services.store.must('PIF', selfArg(a));
    if (pif.management) throw new XenApiError('PIF_IS_MANAGEMENT_INTERFACE', selfArg(a));
    if (pif.disallow_unplug) throw new XenApiError('PIF_DOES_NOT_ALLOW_UNPLUG', selfArg(a));
    ctx.services.store.transact((tx) => tx.update('PIF', selfArg(a), { currently_attached: false }));
  },
  set_disallow_unplug: setField('disallow_unplug'),
  set_property: (ctx, a) => {
    const cur = ctx.services.store.must('PIF', selfArg(a)).properties as Record<string, string>;
    ctx.services.store.transact((tx) => tx.update('PIF', selfArg(a), { properties: { ...cur, [String(a.name)]: a.value } }));
  },
  scan: async (ctx) => networkingOf(ctx).introduceNics(),
};

export const bondHandlers: HandlerTable = {
  create: async (ctx, a) => {
    const { store } = ctx.services;
    const members = a.members as string[];
    const pifs = members.map((m) => store.must('PIF', m));
    for (const [i, p] of pifs.entries()) if (p.bond_slave_of !== NULL_REF) throw new XenApiError('PIF_ALREADY_BONDED', members[i]);
    if (new Set(pifs.map((p) => p.host)).size > 1) throw new XenApiError('PIF_CANNOT_BOND_CROSS_HOST');
    const net = store.must('network', a.network as string);
    const mode = String(a.mode);
    const bond = store.transact((tx) => {
      const master = tx.create('PIF', { device: `bond${store.count('Bond')}`, network: a.network, host: pifs[0].host, MAC: a.MAC || pifs[0].MAC, MTU: pifs[0].MTU, VLAN: -1, physical: false, currently_attached: true, ip_configuration_mode: 'None', managed: true });
      const b = tx.create('Bond', { master, mode, properties: a.properties, primary_slave: members[0], links_up: members.length });
      for (const m of members) tx.update('PIF', m, { bond_slave_of: b });
      return b;
    });
    const n = ctx.services.ext.networking as Networking | undefined;
    if (n) {
      await n.ensureNetwork(a.network as string);
      await n.backend.createBond(String(net.bridge), String(store.must('PIF', String(store.must('Bond', bond).master)).device), pifs.map((p) => String(p.device)), mode === 'active-backup' ? 'active-backup' : 'balance-slb');
    }
    return bond;
  },
  destroy: async (ctx, a) => {
    const { store } = ctx.services;
    const bond = store.must('Bond', selfArg(a));
    const master = store.get('PIF', String(bond.master));
    const net = master ? store.get('network', String(master.network)) : undefined;
    if (net && master) await (ctx.services.ext.networking as Networking | undefined)?.backend.removeBond(String(net.bridge), String(master.device)).catch(() => undefined);
    store.transact((tx) => {
      for (const s of bond.slaves as string[]) if (tx.get('PIF', s)) tx.update('PIF', s, { bond_slave_of: NULL_REF });
      if (master) tx.delete('PIF', String(bond.master));
      tx.delete('Bond', selfArg(a));
    });
  },
  set_mode: setField('mode'),
};
