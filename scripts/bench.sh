#!/usr/bin/env bash
# Runs the benchmarks in bench/ (or the ones named), each printing ours beside its ceiling from the same run.
#   bash scripts/bench.sh [--quick] [bench/x.ts ...]
# --quick runs the hot-path benches of the performance table in their short mode (under 3 minutes in all).
# Most need root (namespaces, BPF). Results are recorded by hand in bench/README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
deno_bin="$(bash scripts/setup.sh | tail -n 1)"
[[ -x scripts/build_bpf.sh ]] && bash scripts/build_bpf.sh >&2
quick=()
if [[ "${1:-}" == "--quick" ]]; then quick=(--quick); shift; fi
if (( $# )); then
  benches=("$@")
elif (( ${#quick[@]} )); then
  benches=(bench/startup.ts bench/api_post.ts bench/named_pipe.ts bench/marker_flows.ts bench/firefly_listener.ts
    bench/marker_prog.ts bench/marker_tcp.ts bench/metrics_netlink.ts)
else
  benches=(bench/*.ts)
fi
for b in "${benches[@]}"; do
  [[ "$b" == bench/lib.ts ]] && continue
  echo "== $b"
  args=()
  # Only the benches that have a short mode get --quick; api_post gets a short run instead.
  if (( ${#quick[@]} )) && grep -q -- "--quick\|quick:" "$b"; then args=(--quick); fi
  if (( ${#quick[@]} )) && [[ "$b" == bench/marker_prog.ts ]]; then args=(--only label); fi
  if [[ "$b" == bench/api_post.ts ]]; then
    # One server per run: the socket floor, bare Deno.serve, then ours with a counting sink and with the
    # firefly backend, interleaved by round (wrk, 30 connections, when installed).
    rounds=3; secs=10
    if (( ${#quick[@]} )); then rounds=2; secs=3; fi
    for _ in $(seq "$rounds"); do
      for server in plain bare api api-firefly; do
        run=(--server "${server%-firefly}")
        [[ "$server" == api-firefly ]] && run+=(--backend firefly)
        "$deno_bin" run --allow-all "$b" "${run[@]}" --connections 30 --seconds "$secs" --warmup 1 2>/dev/null |
          sed -n 2p | sed "s/^/$server: /"
      done
    done
    continue
  fi
  "$deno_bin" run --allow-all --v8-flags=--expose-gc "$b" "${args[@]}"
done
