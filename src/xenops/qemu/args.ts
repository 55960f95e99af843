/** Building the qemu-system-x86_64 command line for a DomainConfig. */
import path from 'node:path';
import type { DiskConfig, DomainConfig, NicConfig } from '../backend.ts';

export type Accel = 'kvm' | 'tcg';

/** Files of one domain, relative to its directory (QEMU runs with cwd = that directory). */
export const DOMAIN_FILES = {
  qmp: 'qmp.sock',
  serialSock: 'serial.sock',
  serialLog: 'serial.log',
  /** Host side of the guest agent's virtio-serial port (org.qemu.guest_agent.0). */
  qga: 'qga.sock',
  vnc: 'vnc.sock',
  config: 'config.json',
  qemuLog: 'qemu.log',
  ovmfVars: 'OVMF_VARS.fd',
} as const;

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

/** QEMU ids: qdev ids may be long, block node names must stay < 32 chars. */
export function diskIds(d: Pick<DiskConfig, 'device'>): { dev: string; fmt: string; file: string } {
  const n = safeId(d.device);
  return { dev: `vbd${n}`, fmt: `vbd${n}`, file: `vbd${n}-file` };
}
export function nicIds(n: Pick<NicConfig, 'device'>): { dev: string; netdev: string } {
  const s = safeId(n.device);
  return { dev: `vif${s}`, netdev: `net${s}` };
}
function safeId(s: string): string {
  if (!/^[A-Za-z0-9_.-]{1,20}$/.test(s)) throw new Error(`bad device name ${JSON.stringify(s)}`);
  return s;
}

/** QEMU option-value escaping: commas are doubled. */
export function optEscape(s: string): string { return s.replace(/,/g, ',,'); }

/** An NBD export over a unix socket (`nbd+unix:///name?socket=/path`), as Xenon serves VHD chains. */
function nbdSocket(p: string): { socket: string; name: string } | undefined {
  const m = /^nbd\+unix:\/\/\/([^?]*)\?socket=(.+)$/.exec(p);
  return m ? { name: decodeURIComponent(m[1]), socket: m[2] } : undefined;
}

export function blockdevFileArgs(d: DiskConfig): Record<string, unknown> {
  const ids = diskIds(d);
  const nbd = d.path ? nbdSocket(d.path) : undefined;
  if (nbd) {
    // reconnect-delay: a restarting toolstack serves the export again; the guest's I/O waits meanwhile
    return { driver: 'nbd', server: { type: 'unix', path: nbd.socket }, ...(nbd.name ? { export: nbd.name } : {}), 'node-name': ids.file, 'read-only': d.readOnly, 'reconnect-delay': 60 };
  }
  const driver = d.path && d.path.startsWith('/dev/') ? 'host_device' : 'file';
  return { driver, filename: path.resolve(d.path!), 'node-name': ids.file, 'read-only': d.readOnly, 'auto-read-only': false };
}
export function blockdevFormatArgs(d: DiskConfig): Record<string, unknown> {
  const ids = diskIds(d);
  return { driver: d.format, file: ids.file, 'node-name': ids.fmt, 'read-only': d.readOnly };
}

function blockdevCli(o: Record<string, unknown>, prefix = ''): string {
  return Object.entries(o)
    .map(([k, v]) => (v !== null && typeof v === 'object' ? blockdevCli(v as Record<string, unknown>, `${prefix}${k}.`) : `${prefix}${k}=${typeof v === 'boolean' ? (v ? 'on' : 'off') : optEscape(String(v))}`))
    .join(',');
}

/** Boot index per device following a xapi order string (c = disks, d = CD drives, n = NICs). */
export function bootIndexes(cfg: DomainConfig): Map<string, number> {
  const m = new Map<string, number>();
  let i = 1;
  const order = (cfg.bootOrder || 'cd').toLowerCase();
  for (const ch of order) {
    if (ch === 'c') for (const d of cfg.disks) if (d.kind === 'disk' && d.bootable && !m.has(d.id)) m.set(d.id, i++);
    if (ch === 'd') for (const d of cfg.disks) if (d.kind === 'cdrom' && !m.has(d.id)) m.set(d.id, i++);
    if (ch === 'n') for (const n of cfg.nics) if (!m.has(n.id)) m.set(n.id, i++);
  }
  return m;
}

export function nicDeviceArgs(n: NicConfig, tap: string | undefined, bootindex?: number): Record<string, unknown> {
  const ids = nicIds(n);
  const o: Record<string, unknown> = { driver: n.model ?? 'virtio-net-pci', id: ids.dev, mac: n.mac };
  if (tap) o.netdev = ids.netdev;
  if (n.mtu && (n.model ?? 'virtio-net-pci') === 'virtio-net-pci') o.host_mtu = n.mtu;
  if (bootindex !== undefined) o.bootindex = bootindex;
  return o;
}

export function diskDeviceArgs(d: DiskConfig, ideSlot: number | undefined, bootindex?: number): Record<string, unknown> {
  const ids = diskIds(d);
  const o: Record<string, unknown> = {};
  if (d.kind === 'cdrom') {
    o.driver = 'ide-cd';
    o.bus = `ide.${Math.floor((ideSlot ?? 0) / 2)}`;
    o.unit = (ideSlot ?? 0) % 2;
  } else {
    o.driver = 'virtio-blk-pci';
  }
  o.id = ids.dev;
  if (d.path) o.drive = ids.fmt;
  if (bootindex !== undefined) o.bootindex = bootindex;
  return o;
}

function deviceCli(o: Record<string, unknown>): string {
  const { driver, ...rest } = o;
  return [String(driver), ...Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'boolean' ? (v ? 'on' : 'off') : optEscape(String(v))}`)].join(',');
}

export interface ArgsOptions {
  accel: Accel;
  paused: boolean;
  /** -incoming URI (resume). */
  incoming?: string;
  /** Tap device name per NIC id (taps created by the backend for bridge NICs, or NicConfig.tap). */
  taps: Map<string, string>;
}

/** argv (without the binary) for a domain; paths of the domain's own files are relative to its directory. */
export function buildQemuArgs(cfg: DomainConfig, o: ArgsOptions): string[] {
  const a: string[] = [];
  const memMiB = Math.max(16, Math.ceil(cfg.memoryBytes / (1024 * 1024)));
  const name = cfg.name.replace(/[^A-Za-z0-9 _.:@+-]/g, '_') || cfg.uuid;
  a.push('-nodefaults', '-no-user-config');
  a.push('-name', `${optEscape(name)},debug-threads=on`);
  a.push('-uuid', cfg.uuid);
  a.push('-machine', 'pc');
  a.push('-accel', o.accel);
  if (o.accel === 'kvm') a.push('-cpu', 'host');
  a.push('-m', String(memMiB));
  a.push('-smp', `${Math.max(1, cfg.vcpusAtStartup)},maxcpus=${Math.max(cfg.vcpusMax, cfg.vcpusAtStartup, 1)}`);
  // Guest-initiated events are reported, never acted upon: poweroff and reboot
  // leave the domain stopped (status 'shutdown'), a panic pauses it.
  a.push('-action', 'reboot=shutdown,shutdown=pause,panic=pause');
  a.push('-qmp', `unix:${DOMAIN_FILES.qmp},server=on,wait=off`);
  a.push('-chardev', `socket,id=ser0,path=${DOMAIN_FILES.serialSock},server=on,wait=off,logfile=${DOMAIN_FILES.serialLog},logappend=on`);
  a.push('-serial', 'chardev:ser0');
  const vga = cfg.platform.vga ?? 'std';
  a.push('-vga', vga === 'cirrus' ? 'cirrus' : vga === 'none' ? 'none' : 'std');
  a.push('-display', 'none');
  if (vga !== 'none') a.push('-vnc', `unix:${DOMAIN_FILES.vnc}`);
  if (cfg.platform.pvpanic !== 'false') a.push('-device', 'pvpanic');
  // Guest agent channel: a guest running qemu-ga (or the like) answers on it.
  a.push('-device', 'virtio-serial-pci,id=vser0');
  a.push('-chardev', `socket,id=qga0,path=${DOMAIN_FILES.qga},server=on,wait=off`);
  a.push('-device', 'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0');
  if (cfg.firmware === 'uefi') {
    a.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${optEscape(OVMF_CODE)}`);
    a.push('-drive', `if=pflash,format=raw,unit=1,file=${DOMAIN_FILES.ovmfVars}`);
  }
  if (cfg.kernel) {
    a.push('-kernel', path.resolve(cfg.kernel));
    if (cfg.initrd) a.push('-initrd', path.resolve(cfg.initrd));
    if (cfg.cmdline) a.push('-append', cfg.cmdline);
  }
  const boot = bootIndexes(cfg);
  let ide = 0;
  for (const d of cfg.disks) {
    if (d.path) {
      a.push('-blockdev', blockdevCli(blockdevFileArgs(d)));
      a.push('-blockdev', blockdevCli(blockdevFormatArgs(d)));
    }
    a.push('-device', deviceCli(diskDeviceArgs(d, d.kind === 'cdrom' ? ide++ : undefined, cfg.kernel ? undefined : boot.get(d.id))));
  }
  for (const n of cfg.nics) {
    const tap = o.taps.get(n.id);
    if (tap) a.push('-netdev', `tap,id=${nicIds(n).netdev},ifname=${tap},script=no,downscript=no`);
    a.push('-device', deviceCli(nicDeviceArgs(n, tap, cfg.kernel ? undefined : boot.get(n.id))));
  }
  if (o.paused) a.push('-S');
  if (o.incoming) a.push('-incoming', o.incoming);
  return a;
}
