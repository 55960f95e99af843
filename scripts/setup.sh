#!/usr/bin/env bash
# Installs everything Xenon needs on a fresh Debian 12 machine (run as root):
# Debian packages (QEMU, qemu-utils, OVS, busybox, libvhdi, the Python XenAPI
# binding for the client tests), the npm packages, and the test guest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every command that src/, tools/, test/ and bench/ run comes from one of these
# (scripts/check-fresh.sh checks it on a clean Debian 12 system).
DEBS=(
  qemu-system-x86 ovmf      # qemu-system-x86_64, UEFI firmware
  qemu-utils                # qemu-img, qemu-nbd, qemu-io
  openvswitch-switch        # ovsdb-server, ovs-vswitchd, ovs-vsctl, ovs-ofctl, ovs-appctl, ovsdb-tool
  iproute2 iputils-ping     # ip, bridge; ping (network tests)
  libvhdi-utils fuse3       # vhdiinfo, vhdimount, fusermount (VHD interoperability tests)
  busybox-static cpio       # the test guest's initramfs (tools/testguest)
  python3-os-xenapi         # the Python XenAPI binding (client tests)
  ansible                   # community.general xenserver_guest* modules (test/clients/ansible.test.ts)
  iperf3 wrk                # bench/net, bench/api
  etcd-server               # etcd 3.4: HA's consensus (the daemon runs its own members)
  chromium                  # the web console's end-to-end tests and bench/web (playwright-core drives it)
)
missing=()
for p in "${DEBS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# the system OVS service is not ours: Xenon runs its own ovsdb-server/ovs-vswitchd
if command -v systemctl >/dev/null && systemctl is-active --quiet openvswitch-switch 2>/dev/null; then :; fi
# nor is the system etcd the package enables: HA starts a member per host on its pool address
if command -v systemctl >/dev/null && systemctl is-enabled --quiet etcd 2>/dev/null; then systemctl disable --now --quiet etcd || true; fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "setup: building the web console"
npm run --silent build:web

echo "setup: building the test guest"
npx tsx tools/testguest/build.ts
