#!/usr/bin/env bash
# Sets everything up, then runs the main job: a Xenon host with local storage and
# a network, a test VM booted, the addresses printed. Ctrl-C stops the toolstack
# and says what keeps running; `npx xenon stop --data-dir data --guests` stops that too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec npx tsx tools/main.ts "$@"
