// Host NIC discovery (used at first start to create PIFs): physical network
// devices from /sys/class/net, read inside a network namespace if one is
// given (`ip netns exec` remounts /sys for that namespace).
// Skipped: lo, bridges, taps/tuns (which includes OVS netdev internal ports),
// OVS kernel internal ports, bonds, VXLAN and other virtual devices. veth
// ends count as NICs only with includeVeth (default: only inside a netns,
// where a test or a simulated pool host uses them as its "physical" NICs).
import { Runner } from './exec.ts';
import { listLinks } from './links.ts';

export interface HostNic {
  device: string;
  mac: string;
  mtu: number;
  carrier: boolean;
  /** Mb/s, when the driver reports one. */
  speedMbps?: number;
  operstate: string;
  driver?: string;
  kind: 'physical' | 'veth';
}

const SCRIPT = `
for d in /sys/class/net/*; do
  n=\${d##*/}
  echo "@$n"
  for f in address mtu carrier speed operstate type; do printf '%s=%s\\n' "$f" "$(cat "$d/$f" 2>/dev/null)"; done
  if [ -e "$d/device" ]; then echo device=1; drv=$(readlink "$d/device/driver" 2>/dev/null); echo "driver=\${drv##*/}"; fi
  [ -e "$d/bridge" ] && echo bridge=1
  [ -e "$d/tun_flags" ] && echo tun=1
  [ -e "$d/bonding" ] && echo bond=1
done
exit 0
`;

export function parseSysDump(out: string): Map<string, Record<string, string>> {
  const devs = new Map<string, Record<string, string>>();
  let cur: Record<string, string> | null = null;
  for (const line of out.split('\n')) {
    if (line.startsWith('@')) {
      cur = {};
      devs.set(line.slice(1), cur);
    } else if (cur && line.includes('=')) {
      const i = line.indexOf('=');
      cur[line.slice(0, i)] = line.slice(i + 1);
    }
  }
  return devs;
}

export async function listHostNics(opts: { netns?: string; includeVeth?: boolean } = {}): Promise<HostNic[]> {
  const r = new Runner(opts.netns);
  const includeVeth = opts.includeVeth ?? !!opts.netns;
  const sys = parseSysDump((await r.run('sh', ['-c', SCRIPT])).stdout);
  const kinds = new Map((await listLinks(r)).map((l) => [l.ifname, l.linkinfo?.info_kind ?? '']));
  const nics: HostNic[] = [];
  for (const [device, f] of sys) {
    if (device === 'lo' || f.type === '772') continue; // ARPHRD_LOOPBACK
    if (f.type !== '1') continue; // Ethernet only
    if (f.bridge || f.tun || f.bond) continue;
    const kind = kinds.get(device) ?? '';
    let k: HostNic['kind'];
    if (f.device && kind === '') k = 'physical';
    else if (kind === 'veth' && includeVeth) k = 'veth';
    else continue; // openvswitch, vxlan, macvlan, ... and veths outside a test netns
    const speed = Number.parseInt(f.speed ?? '', 10);
    nics.push({
      device,
      mac: (f.address ?? '').toLowerCase(),
      mtu: Number.parseInt(f.mtu ?? '0', 10),
      carrier: f.carrier === '1',
      ...(Number.isFinite(speed) && speed > 0 ? { speedMbps: speed } : {}),
      operstate: f.operstate ?? 'unknown',
      ...(f.driver ? { driver: f.driver } : {}),
      kind: k,
    });
  }
  return nics.sort((a, b) => a.device.localeCompare(b.device, undefined, { numeric: true }));
}
