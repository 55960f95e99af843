#!/usr/bin/env bash
# Sets everything up, then runs the type check and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: type check"
npx tsc --noEmit -p .
exec bash scripts/suite.sh "$@"
