#!/usr/bin/env bash
# Checks the README's set-up on a clean Debian 12 system, not on this machine:
# a debootstrap'd bookworm chroot given what a fresh Debian 12 machine of this
# kind has (Node 20 with npm, python3, make, g++, git), a clone of a branch,
# `bash scripts/setup.sh`, then test files that need the Debian packages.
#
#   bash scripts/check-fresh.sh [--branch main] [--dir /work/chroot] [--base DIR] [--keep] [TEST_FILE...]
#
# --base DIR  reuse a debootstrap'd system (copied, never changed) instead of
#             running debootstrap again (it takes a few minutes).
# --keep      leave the chroot directory for inspection (mounts are always undone).
# Run as root. Mounts are undone on exit, also on failure or Ctrl-C.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
BRANCH=main
DIR=/work/chroot
BASE=
KEEP=0
TESTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --branch) BRANCH="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) TESTS+=("$1"); shift ;;
  esac
done
if [ ${#TESTS[@]} -eq 0 ]; then
  TESTS=(test/network/ovs.test.ts test/network/bridge.test.ts test/network/host-nics.test.ts
         test/storage/sr-vdi.test.ts test/storage/qcow2.test.ts test/storage/vhd-interop.test.ts
         test/clients/xenapi-py.test.ts test/xenops/qemu.test.ts test/cli/xenon-stop.test.ts
         test/ha/engine.test.ts)
fi
[ "$(id -u)" = 0 ] || { echo "check-fresh: run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }

cleanup() {
  if mountpoint -q "$DIR"; then umount -R "$DIR" 2>/dev/null || umount -lR "$DIR"; fi
  if [ "$KEEP" = 0 ] && [ -d "$DIR" ] && ! findmnt -rn -o TARGET | grep -q "^$DIR/"; then rm -rf --one-file-system "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if findmnt -rn -o TARGET | grep -q "^$DIR\(/\|$\)"; then echo "check-fresh: $DIR has mounts; undo them first" >&2; exit 1; fi
rm -rf --one-file-system "$DIR"
if [ -n "$BASE" ]; then
  echo "check-fresh: copying $BASE to $DIR"
  cp -a "$BASE" "$DIR"
else
  echo "check-fresh: debootstrap bookworm $DIR"
  debootstrap --include=python3,make,g++,git,ca-certificates bookworm "$DIR" http://deb.debian.org/debian >/dev/null
fi

# What a fresh Debian 12 machine of this kind has beyond debootstrap: the
# usual apt sources (with updates and security), DNS, Node 20 with npm.
cat > "$DIR/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
cp -L /etc/resolv.conf "$DIR/etc/resolv.conf"
# this machine's own trusted CAs (e.g. a TLS-intercepting egress proxy), which npm needs here
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$DIR/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$DIR/usr/local/share/ca-certificates/"
  chroot "$DIR" update-ca-certificates >/dev/null 2>&1
fi
# Node 20 with npm as this machine has it: every file of its nodejs package
# (node, npm, the headers node-gyp builds better-sqlite3 against) and its npm
# configuration (CA file; nodedir, as nothing is downloaded from nodejs.org here).
"$(command -v node)" -e 'process.exit(Number(process.versions.node.split(".")[0]) === 20 ? 0 : 1)' \
  || { echo "check-fresh: this machine's node is not Node 20 ($(node --version)); give the chroot Node 20 another way" >&2; exit 1; }
dpkg -L nodejs | while read -r f; do if [ -f "$f" ] || [ -L "$f" ]; then printf '%s\n' "$f"; fi; done \
  | tar -cf - --no-recursion -T - 2>/dev/null | tar -xf - -C "$DIR"
# npm as it is now, whole: an npm updated in place has files its package does not list
NPM_DIR="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
rm -rf "$DIR$NPM_DIR" && mkdir -p "$DIR$(dirname "$NPM_DIR")" && cp -a "$NPM_DIR" "$DIR$NPM_DIR"
for rc in /usr/etc/npmrc /etc/npmrc /root/.npmrc; do
  [ ! -f "$rc" ] || { mkdir -p "$DIR$(dirname "$rc")"; cp "$rc" "$DIR$rc"; }
done

# the root a mount point of its own, as on a booted machine (`ip netns exec` remounts /)
mount --bind "$DIR" "$DIR"
mount -t proc proc "$DIR/proc"
mount --rbind /sys "$DIR/sys"; mount --make-rslave "$DIR/sys"
mount --bind /dev "$DIR/dev"
mount --bind /dev/pts "$DIR/dev/pts"
# a private /run: `ip netns` keeps its namespaces there, as on a booted machine
mount -t tmpfs -o mode=0755 tmpfs "$DIR/run"

echo "check-fresh: cloning $BRANCH ($(git -C "$REPO" rev-parse --short "$BRANCH"))"
git clone -q --branch "$BRANCH" "$REPO" "$DIR/root/xenon"

in_chroot() { chroot "$DIR" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb "$@"; }
echo "check-fresh: node $(in_chroot node --version), npm $(in_chroot npm --version)"
echo "check-fresh: bash scripts/setup.sh"
in_chroot bash -c 'cd /root/xenon && bash scripts/setup.sh'

missing=()
for t in "${TESTS[@]}"; do [ -f "$DIR/root/xenon/$t" ] || missing+=("$t"); done
[ ${#missing[@]} -eq 0 ] || echo "check-fresh: not in $BRANCH, skipped: ${missing[*]}"
run=()
for t in "${TESTS[@]}"; do [ -f "$DIR/root/xenon/$t" ] && run+=("$t"); done
echo "check-fresh: tests: ${run[*]}"
status=0
in_chroot bash -c 'cd /root/xenon && node --import tsx --test --test-concurrency=1 --test-reporter=spec "$@"' _ "${run[@]}" \
  | tee "$DIR/root/tests.log" || status=$?
# a skip can mean something the set-up should have installed is missing: read why
skipped=$(sed -n 's/^ℹ skipped \([0-9]*\)$/\1/p' "$DIR/root/tests.log" | tail -1)
if [ "${skipped:-0}" != 0 ]; then
  echo "check-fresh: $skipped test(s) skipped:"; grep -E '# SKIP|﹣' "$DIR/root/tests.log" || true
fi
echo "check-fresh: exit $status"
exit "$status"
