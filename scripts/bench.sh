#!/usr/bin/env bash
# Runs the benchmarks in bench/ (or the ones named), each printing its numbers and method.
# Most need root (namespaces, BPF). Results are recorded by hand in bench/README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
deno_bin="$(bash scripts/setup.sh | tail -n 1)"
[[ -x scripts/build_bpf.sh ]] && bash scripts/build_bpf.sh >&2
if (( $# )); then benches=("$@"); else benches=(bench/*.ts); fi
for b in "${benches[@]}"; do
  echo "== $b"
  "$deno_bin" run --allow-all "$b"
done
