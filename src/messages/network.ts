/** network, VIF, PIF, VLAN and Bond: virtual switches, guest NICs, host NICs. */
import { XenApiError } from '../datamodel/api-error.ts';
import { formatDateTime, NULL_REF } from '../datamodel/types.ts';
import type { Ref } from '../datamodel/generated/records.ts';
import type { Row } from '../db/store.ts';
import { notImplemented, type CallContext, type Handler, type NetworkingService, type Services } from './context.ts';
import { creatable, setField } from './generic.ts';
import type { Bond_handlers, network_handlers, PIF_handlers, VIF_handlers, VLAN_handlers } from './generated/handlers.ts';
import { xenopsOf } from './vm.ts';
import { randomMac } from './vm-domains/index.ts';
import { OBSERVED_ON } from './pif-address.ts';
import { assertNoVifsInUseOn, plugAccessPif, unplugAccessPif } from './tunnel.ts';

export function networkingOf(ctx: CallContext): NetworkingService {
  const n = ctx.services.networking;
  if (!n) throw new XenApiError('NOT_IMPLEMENTED', 'no networking on this host');
  return n;
}

/** A network's bridge on a PIF's host as the records say: here, or on the member through the host interface. */
async function ensureOnHost(services: Services, host: string, network: string, replace = false): Promise<void> {
  if (host !== services.hostRef() && services.pool) await services.pool.ensureNetworkOn(host, network, replace);
  else await services.networking?.ensureNetwork(network, { replace });
}

/** A bond made (or removed) on the host of its PIFs. */
async function bondOnHost(services: Services, bond: string, make: boolean): Promise<void> {
  const host = services.store.must('PIF', services.store.must('Bond', bond).master).host;
  if (host !== services.hostRef() && services.pool) await services.pool.bondOn(bond, make);
  else if (make) await services.networking?.createBond(bond);
  else await services.networking?.removeBond(bond);
}

const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;
const running = (power: unknown): boolean => power === 'Running' || power === 'Paused';

export const networkHandlers: network_handlers = {
  create: async (ctx, a) => {
    const f = creatable('network', a.args);
    const n = ctx.services.networking;
    const bridge = f.bridge || (n ? n.nextBridgeName() : `xapi${ctx.services.store.count('network')}`);
    const ref = ctx.services.store.transact((tx) => tx.create('network', { MTU: 1500, ...f, bridge, managed: f.managed ?? true }));
    await n?.ensureNetwork(ref);
    return ref;
  },
  destroy: async (ctx, a) => {
    const { store } = ctx.services;
    const net = store.must('network', a.self);
    if (net.PIFs.some((p) => store.get('PIF', p)?.physical === true)) throw new XenApiError('CANNOT_DESTROY_SYSTEM_NETWORK', a.self);
    if (net.PIFs.length) throw new XenApiError('NETWORK_CONTAINS_PIF', ...net.PIFs);
    const n = ctx.services.networking;
    n?.assertNoActiveVifs(a.self);
    store.transact((tx) => {
      for (const vif of net.VIFs) if (tx.get('VIF', vif)) tx.delete('VIF', vif);
      tx.delete('network', a.self);
    });
    await n?.backend.removeBridge(net.bridge).catch(() => undefined);
  },
  set_default_locking_mode: setField('network', 'default_locking_mode'),
  add_purpose: (ctx, a) => {
    const cur = ctx.services.store.must('network', a.self).purpose;
    if (!cur.includes(a.value)) ctx.services.store.transact((tx) => tx.update('network', a.self, { purpose: [...cur, a.value] }));
  },
  remove_purpose: (ctx, a) => {
    const cur = ctx.services.store.must('network', a.self).purpose;
    ctx.services.store.transact((tx) => tx.update('network', a.self, { purpose: cur.filter((p) => p !== a.value) }));
  },
  create_new_blob: notImplemented,
};

async function plugVif(ctx: CallContext, ref: string): Promise<void> {
  const { store } = ctx.services;
  const vif = store.must('VIF', ref);
  const vm = store.must('VM', vif.VM);
  if (!running(vm.power_state)) throw new XenApiError('VM_BAD_POWER_STATE', vif.VM, 'running', vm.power_state.toLowerCase());
  if (vif.currently_attached) throw new XenApiError('DEVICE_ALREADY_ATTACHED', ref);
  const where = await networkingOf(ctx).plug(ref);
  await xenopsOf(ctx).backend.plugNic(vm.uuid, { id: vif.uuid, device: vif.device, mac: vif.MAC, ...where, model: 'virtio-net-pci' });
  store.transact((tx) => tx.update('VIF', ref, { currently_attached: true }));
}

async function unplugVif(ctx: CallContext, ref: string): Promise<void> {
  const { store } = ctx.services;
  const vif = store.must('VIF', ref);
  const vm = store.must('VM', vif.VM);
  if (!vif.currently_attached || !running(vm.power_state)) throw new XenApiError('DEVICE_ALREADY_DETACHED', ref);
  await xenopsOf(ctx).backend.unplugNic(vm.uuid, vif.uuid);
  await networkingOf(ctx).unplug(ref);
  store.transact((tx) => tx.update('VIF', ref, { currently_attached: false }));
}

type VifPatch = Partial<Pick<Row<'VIF'>, 'locking_mode' | 'ipv4_allowed' | 'ipv6_allowed'>>;

/** Writes the VIF's locking settings and applies them to its running port. */
async function setLocking(ctx: CallContext, vif: Ref<'VIF'>, patch: VifPatch): Promise<void> {
  ctx.services.store.transact((tx) => tx.update('VIF', vif, patch));
  await ctx.services.networking?.applyLocking(vif);
}

const vifSetMember =
  (field: 'ipv4_allowed' | 'ipv6_allowed', add: boolean): Handler<{ self: Ref<'VIF'>; value: string }, void> =>
  (ctx, a) => {
    const cur = ctx.services.store.must('VIF', a.self)[field];
    const next = add ? [...new Set([...cur, a.value])] : cur.filter((x) => x !== a.value);
    return setLocking(ctx, a.self, { [field]: next });
  };

export const vifHandlers: VIF_handlers = {
  create: (ctx, a) => {
    const { store } = ctx.services;
    const { VM = NULL_REF, network = NULL_REF, MAC = '', device = '', ...rest } = a.args;
    const vm = store.must('VM', VM);
    store.must('network', network);
    if (MAC !== '' && !MAC_RE.test(MAC)) throw new XenApiError('MAC_INVALID', MAC);
    const used = new Set(vm.VIFs.map((v) => store.get('VIF', v)?.device));
    const chosen = device || String([...Array(7).keys()].find((i) => !used.has(String(i))));
    if (used.has(chosen)) throw new XenApiError('DEVICE_ALREADY_EXISTS', chosen);
    return store.transact((tx) => {
      const metrics = tx.create('VIF_metrics', { last_updated: formatDateTime(new Date()) });
      return tx.create('VIF', {
        MTU: 1500, ...creatable('VIF', rest), VM, network, device: chosen, MAC: MAC || randomMac(), MAC_autogenerated: MAC === '',
        currently_attached: false, metrics, allowed_operations: ['attach'],
      });
    });
  },
  destroy: (ctx, a) => {
    const { store } = ctx.services;
    const vif = store.must('VIF', a.self);
    const vm = store.get('VM', vif.VM);
    if (vif.currently_attached && running(vm?.power_state)) throw new XenApiError('OPERATION_NOT_ALLOWED', 'the VIF is plugged into a running VM: unplug it first');
    store.transact((tx) => {
      if (vif.metrics !== NULL_REF && tx.get('VIF_metrics', vif.metrics)) tx.delete('VIF_metrics', vif.metrics);
      tx.delete('VIF', a.self);
    });
  },
  plug: (ctx, a) => plugVif(ctx, a.self),
  unplug: (ctx, a) => unplugVif(ctx, a.self),
  unplug_force: (ctx, a) => unplugVif(ctx, a.self),
  move: async (ctx, a) => {
    const { store } = ctx.services;
    const vif = store.must('VIF', a.self);
    store.must('network', a.network);
    const attached = vif.currently_attached && running(store.get('VM', vif.VM)?.power_state);
    if (attached) await unplugVif(ctx, a.self);
    store.transact((tx) => tx.update('VIF', a.self, { network: a.network }));
    if (attached) await plugVif(ctx, a.self);
  },
  set_locking_mode: (ctx, a) => setLocking(ctx, a.self, { locking_mode: a.value }),
  set_ipv4_allowed: (ctx, a) => setLocking(ctx, a.self, { ipv4_allowed: a.value }),
  set_ipv6_allowed: (ctx, a) => setLocking(ctx, a.self, { ipv6_allowed: a.value }),
  add_ipv4_allowed: vifSetMember('ipv4_allowed', true),
  remove_ipv4_allowed: vifSetMember('ipv4_allowed', false),
  add_ipv6_allowed: vifSetMember('ipv6_allowed', true),
  remove_ipv6_allowed: vifSetMember('ipv6_allowed', false),
  configure_ipv4: (ctx, a) => {
    ctx.services.store.transact((tx) => tx.update('VIF', a.self, { ipv4_configuration_mode: a.mode, ipv4_addresses: a.address ? [a.address] : [], ipv4_gateway: a.gateway }));
  },
  configure_ipv6: (ctx, a) => {
    ctx.services.store.transact((tx) => tx.update('VIF', a.self, { ipv6_configuration_mode: a.mode, ipv6_addresses: a.address ? [a.address] : [], ipv6_gateway: a.gateway }));
  },
};

export const vlanHandlers: VLAN_handlers = {
  create: async (ctx, a) => {
    const { store } = ctx.services;
    const tagged = store.must('PIF', a.tagged_PIF);
    const { tag } = a;
    if (!Number.isInteger(tag) || tag < 0 || tag > 4094) throw new XenApiError('VLAN_TAG_INVALID', String(tag));
    if (tagged.VLAN >= 0) throw new XenApiError('PIF_IS_VLAN', a.tagged_PIF);
    const net = store.must('network', a.network);
    // xapi's assert_no_other_local_pifs: [host, the host's PIF on the network]
    const here = net.PIFs.find((p) => store.get('PIF', p)?.host === tagged.host);
    if (here) throw new XenApiError('NETWORK_ALREADY_CONNECTED', tagged.host, here);
    if (store.where('VLAN', (v) => v.tagged_PIF === a.tagged_PIF && v.tag === tag).length) throw new XenApiError('PIF_VLAN_EXISTS', tagged.device);
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
    // on the PIF's host, the network's plain bridge (it has no ports yet) becomes a VLAN bridge on the PIF's
    await ensureOnHost(ctx.services, tagged.host, a.network, true);
    return vlan;
  },
  destroy: async (ctx, a) => {
    const { store } = ctx.services;
    const vlan = store.must('VLAN', a.self);
    const untagged = store.get('PIF', vlan.untagged_PIF);
    const n = ctx.services.networking;
    if (untagged) n?.assertNoActiveVifs(untagged.network);
    store.transact((tx) => {
      if (untagged) {
        if (untagged.metrics !== NULL_REF && tx.get('PIF_metrics', untagged.metrics)) tx.delete('PIF_metrics', untagged.metrics);
        tx.delete('PIF', vlan.untagged_PIF);
      }
      tx.delete('VLAN', a.self);
    });
    // back to a plain, host-internal bridge on the VLAN's host
    if (untagged && store.get('network', untagged.network)) await ensureOnHost(ctx.services, untagged.host, untagged.network, true);
  },
};

export const pifHandlers: PIF_handlers = {
  reconfigure_ip: async (ctx, a) => {
    const { mode } = a;
    if (mode === 'Static' && !/^\d+\.\d+\.\d+\.\d+$/.test(a.IP)) throw new XenApiError('INVALID_IP_ADDRESS_SPECIFIED', 'IP');
    const statically = (v: string): string => (mode === 'Static' ? v : '');
    const { services } = ctx;
    const host = services.store.must('PIF', a.self).host;
    // from now on the configuration is Xenon's (no longer one read from the host)
    const { [OBSERVED_ON]: _observed, ...other_config } = services.store.must('PIF', a.self).other_config;
    services.store.transact((tx) => tx.update('PIF', a.self, {
      ip_configuration_mode: mode, IP: statically(a.IP), netmask: statically(a.netmask), gateway: a.gateway, DNS: a.DNS, other_config,
    }));
    // a member's PIF is configured on the member
    if (host !== services.hostRef() && services.pool) await services.pool.applyIpOn(a.self);
    else await services.networking?.applyIp(a.self);
  },
  plug: async (ctx, a) => {
    const pif = ctx.services.store.must('PIF', a.self);
    if (pif.tunnel_access_PIF_of.length) return plugAccessPif(ctx.services, a.self);
    // the bridge (with its uplink, VLAN or bond) on the PIF's own host
    await ensureOnHost(ctx.services, pif.host, pif.network);
    ctx.services.store.transact((tx) => tx.update('PIF', a.self, { currently_attached: true }));
  },
  unplug: async (ctx, a) => {
    const pif = ctx.services.store.must('PIF', a.self);
    if (pif.management) throw new XenApiError('PIF_IS_MANAGEMENT_INTERFACE', a.self);
    if (pif.disallow_unplug) throw new XenApiError('PIF_DOES_NOT_ALLOW_UNPLUG', a.self);
    if (pif.tunnel_access_PIF_of.length) return unplugAccessPif(ctx.services, a.self);
    assertNoVifsInUseOn(ctx.services, pif.host, pif.network);
    // as xapi's: a transport PIF going down takes its tunnels' access PIFs with it
    for (const t of pif.tunnel_transport_PIF_of) {
      const access = ctx.services.store.get('tunnel', t)?.access_PIF;
      if (access && ctx.services.store.get('PIF', access)?.currently_attached) await unplugAccessPif(ctx.services, access);
    }
    // the bridge goes down on the PIF's own host (xapi's bring_pif_down)
    if (pif.host !== ctx.services.hostRef() && ctx.services.pool) await ctx.services.pool.bringDownOn(pif.host, pif.network);
    else await ctx.services.networking?.bringDown(pif.network);
    ctx.services.store.transact((tx) => tx.update('PIF', a.self, { currently_attached: false }));
  },
  set_disallow_unplug: setField('PIF', 'disallow_unplug'),
  set_property: (ctx, a) => {
    const cur = ctx.services.store.must('PIF', a.self).properties;
    ctx.services.store.transact((tx) => tx.update('PIF', a.self, { properties: { ...cur, [a.name]: a.value } }));
  },
  scan: async (ctx, a) => {
    // a member's addresses are read on the member (its new NICs are not introduced yet)
    if (a.host !== ctx.services.hostRef() && ctx.services.pool) return ctx.services.pool.recordAddressesOn(a.host);
    await networkingOf(ctx).introduceNics();
    await networkingOf(ctx).recordAddresses();
  },
  db_forget: notImplemented,
  db_introduce: notImplemented,
  forget: notImplemented,
  introduce: notImplemented,
  set_primary_address_type: notImplemented,
  reconfigure_ipv6: notImplemented,
  destroy: notImplemented,
  create_VLAN: notImplemented,
};

export const bondHandlers: Bond_handlers = {
  create: async (ctx, a) => {
    const { store } = ctx.services;
    const { members } = a;
    const pifs = members.map((m) => store.must('PIF', m));
    for (const [i, p] of pifs.entries()) if (p.bond_slave_of !== NULL_REF) throw new XenApiError('PIF_ALREADY_BONDED', members[i]);
    if (new Set(pifs.map((p) => p.host)).size > 1) throw new XenApiError('PIF_CANNOT_BOND_CROSS_HOST');
    store.must('network', a.network);
    const first = pifs[0];
    if (!first) throw new XenApiError('PIF_BOND_NEEDS_MORE_MEMBERS');
    // xapi's assert_no_other_local_pifs
    const here = store.must('network', a.network).PIFs.find((p) => store.get('PIF', p)?.host === first.host);
    if (here) throw new XenApiError('NETWORK_ALREADY_CONNECTED', first.host, here);
    const bond = store.transact((tx) => {
      const master = tx.create('PIF', {
        device: `bond${store.count('Bond')}`, network: a.network, host: first.host, MAC: a.MAC || first.MAC, MTU: first.MTU, VLAN: -1,
        physical: false, currently_attached: true, ip_configuration_mode: 'None', managed: true,
      });
      const b = tx.create('Bond', { master, mode: a.mode, properties: a.properties, primary_slave: members[0], links_up: members.length });
      for (const m of members) tx.update('PIF', m, { bond_slave_of: b });
      return b;
    });
    await bondOnHost(ctx.services, bond, true);
    return bond;
  },
  destroy: async (ctx, a) => {
    const { store } = ctx.services;
    const bond = store.must('Bond', a.self);
    const master = store.get('PIF', bond.master);
    if (master) await bondOnHost(ctx.services, a.self, false);
    store.transact((tx) => {
      for (const s of bond.slaves) if (tx.get('PIF', s)) tx.update('PIF', s, { bond_slave_of: NULL_REF });
      if (master) tx.delete('PIF', bond.master);
      tx.delete('Bond', a.self);
    });
  },
  set_mode: setField('Bond', 'mode'),
  set_property: notImplemented,
};
