#!/usr/bin/env bash
# Runs test files with node's runner (what `npm test` and scripts/test.sh run).
# Node 20's runner does not expand globs itself, so bash lists the files.
#   bash scripts/suite.sh [TEST_FILE_OR_DIR...] [-- NODE_TEST_OPTIONS...]
# XENON_TEST_CONCURRENCY: test files run at once (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s globstar nullglob
files=() opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; opts+=("$@"); break ;;
    -*) opts+=("$1") ;;
    *) if [ -d "$1" ]; then files+=("${1%/}"/**/*.test.ts); else files+=("$1"); fi ;;
  esac
  shift
done
[ ${#files[@]} -gt 0 ] || files=(test/**/*.test.ts)
echo "test: ${#files[@]} test files"
exec node --import tsx --test --test-concurrency="${XENON_TEST_CONCURRENCY:-1}" "${opts[@]}" "${files[@]}"
