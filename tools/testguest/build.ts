/**
 * Test guest builder: a Debian 6.1 kernel plus a busybox initramfs whose init
 * prints `XENON-TESTGUEST-READY boot=<n>` on ttyS0 and then acts on its
 * kernel command line (xenon.mode=poweroff|reboot|panic|stay) and on commands
 * typed on the serial console.
 *
 * Output (gitignored): .cache/testguest/{vmlinuz,initrd.gz,manifest.json}
 * Run: npx tsx tools/testguest/build.ts   (idempotent; fast when cached)
 *
 * Everything comes from Debian packages fetched with `apt-get download` and
 * unpacked with `dpkg-deb -x`: nothing is installed on the host.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, readdir, readFile, rm, writeFile, copyFile, symlink, chmod, stat, rename } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CACHE_DIR = path.join(REPO_ROOT, '.cache', 'testguest');
/** Bump when the initramfs layout or init script changes. */
const RECIPE_VERSION = 7;

/** Modules loaded by init, in this order (dependencies are added in front when missing). */
export const GUEST_MODULES = [
  'virtio_ring', 'virtio', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci', 'virtio_console',
  'failover', 'net_failover', 'virtio_net', 'virtio_blk', 'e1000', 'pvpanic', 'pvpanic-mmio', 'pvpanic-pci', 'button',
];

export interface TestGuestManifest { version: number; kernelPackage: string; kernel: string; initrd: string; modules: string[] }

/** The init script (busybox sh). */
export const INIT_SCRIPT = `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
exec 0</dev/ttyS0 1>/dev/ttyS0 2>&1
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m.ko 2>/dev/null; done
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "\${w#*=}"; return;; esac; done; }
MODE=$(arg xenon.mode); IP=$(arg xenon.ip); PING=$(arg xenon.ping); COUNTDEV=$(arg xenon.countdev)
BOOT=1
if [ -n "$COUNTDEV" ] && [ -b "/dev/$COUNTDEV" ]; then
  # boot counter kept in the first sector of a disk (text digits)
  n=$(dd if=/dev/$COUNTDEV bs=512 count=1 2>/dev/null | tr -dc 0-9 | head -c 9)
  BOOT=$(( \${n:-0} + 1 ))
  printf '%-511s\\n' "$BOOT" | dd of=/dev/$COUNTDEV bs=512 count=1 conv=notrunc 2>/dev/null
  sync
fi
ip link set lo up 2>/dev/null
read -r h < /etc/hostname && echo "$h" > /proc/sys/kernel/hostname
# ACPI power button (clean shutdown from the host): poll the fixed-event counter.
( while sleep 0.5; do set -- $(cat /sys/firmware/acpi/interrupts/ff_pwr_btn 2>/dev/null); if [ "\${1:-0}" != 0 ]; then echo "XENON-POWER-BUTTON"; poweroff -f; fi; done ) &
if [ -n "$IP" ]; then
  ip link set eth0 up && ip addr add "$IP" dev eth0
fi
stty -echo 2>/dev/null
echo "XENON-TESTGUEST-READY boot=$BOOT"
/bin/xenon-qga </dev/null >/dev/null 2>&1 &
if [ -n "$PING" ]; then
  if ping -c 3 -W 2 "$PING" >/dev/null 2>&1; then echo "XENON-PING-OK $PING"; else echo "XENON-PING-FAIL $PING"; fi
fi
case "$MODE" in
  poweroff) poweroff -f ;;
  reboot) reboot -f ;;
  panic) echo c > /proc/sysrq-trigger ;;
esac
# Command loop: one command per line on ttyS0; each ends with XENON-DONE <cmd>.
while true; do
  if ! read -r cmd a1 rest; then sleep 1; continue; fi
  case "$cmd" in
    '') continue ;;
    poweroff) echo "XENON-DONE poweroff"; poweroff -f ;;
    reboot) echo "XENON-DONE reboot"; reboot -f ;;
    panic) echo "XENON-DONE panic"; echo c > /proc/sysrq-trigger ;;
    echo) echo "XENON-ECHO $a1 $rest" ;;
    write-disk) printf '%s\\n' "$rest" | dd of=/dev/$a1 bs=512 conv=sync,notrunc 2>/dev/null; sync; echo "XENON-WROTE $a1" ;;
    read-disk) echo "XENON-READ $a1 $(dd if=/dev/$a1 bs=512 count=1 2>/dev/null | head -n 1)" ;;
    ping) if ping -c 3 -W 2 "$a1" >/dev/null 2>&1; then echo "XENON-PING-OK $a1"; else echo "XENON-PING-FAIL $a1"; fi ;;
    sh) eval "$a1 $rest" ;;
    *) echo "XENON-UNKNOWN $cmd" ;;
  esac
  echo "XENON-DONE $cmd"
done
`;

/**
 * A tiny guest agent (busybox sh) speaking the QEMU guest agent protocol on the
 * virtio-serial port org.qemu.guest_agent.0: guest-sync(-delimited),
 * guest-ping, guest-info, guest-get-osinfo (from /etc/os-release and /proc),
 * guest-get-host-name, guest-network-get-interfaces (/sys/class/net + ip -o addr).
 * One command per line; anything else gets a CommandNotFound error.
 */
export const QGA_SCRIPT = `#!/bin/sh
export PATH=/bin:/sbin
PORT=org.qemu.guest_agent.0
dev=
while [ -z "$dev" ]; do
  for p in /sys/class/virtio-ports/*; do
    n=; [ -r "$p/name" ] && read -r n < "$p/name"
    [ "$n" = "$PORT" ] && [ -c "/dev/\${p##*/}" ] && dev="/dev/\${p##*/}"
  done
  [ -n "$dev" ] || sleep 1
done
mkdir -p /dev/virtio-ports && ln -sf "$dev" "/dev/virtio-ports/$PORT"
. /etc/os-release
CMDS="guest-sync-delimited guest-sync guest-ping guest-info guest-get-osinfo guest-get-host-name guest-network-get-interfaces"
osinfo() {
  read -r krel < /proc/sys/kernel/osrelease; read -r kver < /proc/sys/kernel/version
  printf '{"return": {"kernel-release": "%s", "kernel-version": "%s", "machine": "%s", "id": "%s", "name": "%s", "pretty-name": "%s", "version": "%s", "version-id": "%s"}}\\n' \\
    "$krel" "$kver" "$MACHINE" "$ID" "$NAME" "$PRETTY_NAME" "$VERSION" "$VERSION_ID"
}
info() {
  printf '{"return": {"version": "%s", "supported_commands": [' "$AGENT_VERSION"; s=
  for c in $CMDS; do printf '%s{"name": "%s", "enabled": true, "success-response": true}' "$s" "$c"; s=', '; done
  printf ']}}\\n'
}
net() {
  A=$(ip -o addr 2>/dev/null)
  printf '{"return": ['; s=
  for p in /sys/class/net/*; do
    n=\${p##*/}; mac=; read -r mac < "$p/address"
    printf '%s{"name": "%s", "hardware-address": "%s", "ip-addresses": [' "$s" "$n" "$mac"; s=', '; s2=
    while read -r i nm fam ad rest; do
      [ "$nm" = "$n" ] || continue
      case "$fam" in inet) t=ipv4 ;; inet6) t=ipv6 ;; *) continue ;; esac
      printf '%s{"ip-address-type": "%s", "ip-address": "%s", "prefix": %s}' "$s2" "$t" "\${ad%/*}" "\${ad#*/}"; s2=', '
    done <<EOF
$A
EOF
    printf ']}'
  done
  printf ']}\\n'
}
exec 3<>"$dev"
while true; do
  # EOF while no host is connected: poll
  if ! IFS= read -r line <&3; then sleep 0.5; continue; fi
  id=\${line##*\\"id\\":}; id=\${id# }; id=\${id%%[!0-9]*}
  case "$line" in
    *'"guest-sync-delimited"'*) printf '\\377{"return": %s}\\n' "$id" >&3 ;;
    *'"guest-sync"'*) printf '{"return": %s}\\n' "$id" >&3 ;;
    *'"guest-ping"'*) printf '{"return": {}}\\n' >&3 ;;
    *'"guest-info"'*) info >&3 ;;
    *'"guest-get-osinfo"'*) osinfo >&3 ;;
    *'"guest-get-host-name"'*) read -r h < /proc/sys/kernel/hostname; printf '{"return": {"host-name": "%s"}}\\n' "$h" >&3 ;;
    *'"guest-network-get-interfaces"'*) net >&3 ;;
    *'"execute"'*) printf '{"error": {"class": "CommandNotFound", "desc": "command not supported"}}\\n' >&3 ;;
  esac
done
`;

async function sh(cmd: string, args: string[], cwd?: string): Promise<string> {
  const { stdout } = await run(cmd, args, { cwd, maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

async function pickKernelPackage(): Promise<string> {
  let out = '';
  try { out = await sh('apt-cache', ['search', '--names-only', '^linux-image-6\\.1\\.0-[0-9]+-amd64$']); } catch { /* fallthrough */ }
  let best = -1;
  for (const line of out.split('\n')) {
    const m = /^linux-image-6\.1\.0-(\d+)-amd64 /.exec(line);
    if (m) best = Math.max(best, Number(m[1]));
  }
  if (best < 0) {
    await sh('apt-get', ['update']);
    return pickKernelPackage();
  }
  return `linux-image-6.1.0-${best}-amd64`;
}

async function download(pkg: string, dir: string): Promise<string> {
  const before = new Set(await readdir(dir));
  const existing = [...before].find((f) => f.startsWith(pkg + '_') && f.endsWith('.deb'));
  if (existing) return path.join(dir, existing);
  await run('apt-get', ['download', pkg], { cwd: dir, maxBuffer: 16 * 1024 * 1024 });
  const f = (await readdir(dir)).find((x) => x.startsWith(pkg + '_') && x.endsWith('.deb'));
  if (!f) throw new Error(`apt-get download ${pkg} produced no .deb`);
  return path.join(dir, f);
}

/** `depends=` of a kernel module, read from its .modinfo strings. */
function moduleDepends(ko: Buffer): string[] {
  const key = Buffer.from('depends=');
  let i = ko.indexOf(key);
  while (i >= 0) {
    if (i === 0 || ko[i - 1] === 0) {
      const end = ko.indexOf(0, i);
      const v = ko.subarray(i + key.length, end).toString();
      return v ? v.split(',') : [];
    }
    i = ko.indexOf(key, i + 1);
  }
  return [];
}

async function findModules(root: string): Promise<Map<string, string>> {
  const map = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.ko')) map.set(e.name.slice(0, -3).replace(/_/g, '-'), p);
    }
  };
  await walk(root);
  return map;
}

export async function buildTestGuest(opts: { force?: boolean; log?: (s: string) => void } = {}): Promise<TestGuestManifest> {
  const log = opts.log ?? (() => {});
  const manifestPath = path.join(CACHE_DIR, 'manifest.json');
  if (!opts.force && existsSync(manifestPath)) {
    const m = JSON.parse(await readFile(manifestPath, 'utf8')) as TestGuestManifest;
    m.kernel = path.join(CACHE_DIR, 'vmlinuz');
    m.initrd = path.join(CACHE_DIR, 'initrd.gz');
    if (m.version === RECIPE_VERSION && existsSync(m.kernel) && existsSync(m.initrd)) return m;
  }
  await mkdir(CACHE_DIR, { recursive: true });
  const debs = path.join(CACHE_DIR, 'debs');
  await mkdir(debs, { recursive: true });
  const kpkg = await pickKernelPackage();
  log(`kernel package: ${kpkg}`);
  const kdeb = await download(kpkg, debs);
  const bdeb = await download('busybox-static', debs);

  const work = path.join(CACHE_DIR, 'work');
  await rm(work, { recursive: true, force: true });
  const kx = path.join(work, 'kernel');
  const bx = path.join(work, 'busybox');
  await mkdir(kx, { recursive: true });
  await mkdir(bx, { recursive: true });
  log('unpacking');
  await Promise.all([sh('dpkg-deb', ['-x', kdeb, kx]), sh('dpkg-deb', ['-x', bdeb, bx])]);

  const vmlinuz = (await readdir(path.join(kx, 'boot'))).find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new Error('no boot/vmlinuz-* in ' + kdeb);
  const kernelOut = path.join(CACHE_DIR, 'vmlinuz');
  await copyFile(path.join(kx, 'boot', vmlinuz), kernelOut + '.tmp');
  await rename(kernelOut + '.tmp', kernelOut);

  // initramfs tree
  const root = path.join(work, 'root');
  for (const d of ['bin', 'sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'lib/modules', 'usr/bin', 'usr/sbin']) {
    await mkdir(path.join(root, d), { recursive: true });
  }
  const bb = path.join(root, 'bin', 'busybox');
  await copyFile(path.join(bx, 'bin', 'busybox'), bb);
  await chmod(bb, 0o755);
  const applets = (await sh(bb, ['--list'])).split('\n').filter((a) => a && a !== 'busybox');
  for (const a of applets) {
    const p = path.join(root, 'bin', a);
    if (!existsSync(p)) await symlink('busybox', p);
  }

  // modules in dependency order
  const modRoot = (await readdir(path.join(kx, 'lib', 'modules')))[0]!;
  const mods = await findModules(path.join(kx, 'lib', 'modules', modRoot));
  const order: string[] = [];
  const visit = async (name: string): Promise<void> => {
    const key = name.replace(/_/g, '-');
    if (order.some((o) => o.replace(/_/g, '-') === key)) return;
    const p = mods.get(key);
    if (!p) throw new Error(`module ${name} not found in ${kpkg}`);
    for (const dep of moduleDepends(await readFile(p))) await visit(dep);
    order.push(path.basename(p, '.ko'));
    await copyFile(p, path.join(root, 'lib', 'modules', path.basename(p)));
  };
  for (const m of GUEST_MODULES) await visit(m);
  await writeFile(path.join(root, 'etc', 'modules.order'), order.join('\n') + '\n');
  await writeFile(path.join(root, 'init'), INIT_SCRIPT, { mode: 0o755 });
  await writeFile(path.join(root, 'bin', 'xenon-qga'), QGA_SCRIPT, { mode: 0o755 });
  // What the agent reports as the OS; busybox's version stands for the distribution's.
  const bbVersion = /BusyBox v(\d+(?:\.\d+)*)/.exec(await sh(bb, ['--help']).catch(() => ''))?.[1] ?? '0';
  await writeFile(path.join(root, 'etc', 'os-release'), [
    'NAME="Xenon test guest"', 'ID=xenon-testguest', `VERSION="${bbVersion} (busybox)"`, `VERSION_ID=${bbVersion}`,
    `PRETTY_NAME="Xenon test guest ${bbVersion}"`, 'MACHINE=x86_64', `AGENT_VERSION=xenon-testguest-${RECIPE_VERSION}`, '',
  ].join('\n'));
  await writeFile(path.join(root, 'etc', 'hostname'), 'xenon-testguest\n');

  log('packing initramfs');
  const initrdOut = path.join(CACHE_DIR, 'initrd.gz');
  await run('sh', ['-c', `find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 > ${JSON.stringify(initrdOut + '.tmp')}`], { cwd: root });
  await rename(initrdOut + '.tmp', initrdOut);
  await rm(work, { recursive: true, force: true });

  const manifest: TestGuestManifest = { version: RECIPE_VERSION, kernelPackage: kpkg, kernel: kernelOut, initrd: initrdOut, modules: order };
  await writeFile(manifestPath, JSON.stringify(manifest, null, 2));
  log(`done: ${kernelOut} ${initrdOut} (${(await stat(initrdOut)).size} bytes)`);
  return manifest;
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const t0 = Date.now();
  buildTestGuest({ force: process.argv.includes('--force'), log: (s) => console.log(`[testguest] ${s}`) })
    .then((m) => console.log(`[testguest] kernel=${m.kernel}\n[testguest] initrd=${m.initrd}\n[testguest] ${Date.now() - t0} ms`))
    .catch((e) => { console.error(e); process.exit(1); });
}
