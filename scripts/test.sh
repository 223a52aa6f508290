#!/usr/bin/env bash
# The whole test suite: toolchain setup, BPF build, format/lint/type checks, then `deno test`.
# Ends with one line "N passed, N failed" (tests plus the fmt/lint/check steps). Exit 0 only if nothing failed.
# Extra arguments go to `deno test` (for example a test file or --filter).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
deno_bin="$(bash scripts/setup.sh | tail -n 1)" || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
export PATH="$(dirname "$deno_bin"):$PATH"
export NO_COLOR=1

passed=0
failed=0
step() {
  local name="$1"
  shift
  echo "== $name: $*"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "== $name FAILED"
  fi
}

if [[ -x scripts/build_bpf.sh ]]; then
  step "build BPF objects" bash scripts/build_bpf.sh
fi
step "deno fmt --check" deno fmt --check
step "deno lint" deno lint
step "deno check" deno check src ffi tests $( [[ -d bench ]] && echo bench )

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "== deno test"
deno test --allow-all "$@" 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}

# Deno's summary: "ok | 12 passed (3 steps) | 0 failed | 2 ignored (12ms)" or "FAILED | ...".
summary="$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -n 1)"
if [[ -n "$summary" ]]; then
  t_passed="$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")"
  t_failed="$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")"
  passed=$((passed + t_passed))
  failed=$((failed + t_failed))
  ignored="$(grep -oE '[0-9]+ ignored' <<<"$summary" | cut -d' ' -f1)"
  if [[ -n "$ignored" && "$ignored" != "0" ]]; then
    echo "NOTE: $ignored test(s) were skipped; see the SKIPPED lines above"
  fi
fi
if [[ $test_status -ne 0 && ( -z "$summary" || "${t_failed:-0}" == "0" ) ]]; then
  # deno test failed before or outside the tests (type error, crash): count it.
  failed=$((failed + 1))
  echo "== deno test exited with status $test_status"
fi

# The kernel matrix (scripts/kernel_matrix.sh): the eBPF tests again inside VMs on Linux 6.1 (no TCX) and
# 6.12, on every whole-suite run as root (not when a test file or filter was given); its tests count like
# the others. FLOWD_GO_KERNEL_MATRIX=off leaves it out (a quick local run; the host's kernel is tested anyway).
if [[ $# -eq 0 ]]; then
  if [[ "${FLOWD_GO_KERNEL_MATRIX:-on}" == off ]]; then
    echo "SKIPPED (FLOWD_GO_KERNEL_MATRIX=off): the kernel matrix (eBPF tests in VMs on Linux 6.1 and 6.12)"
  elif [[ "$(id -u)" != 0 ]]; then
    echo "SKIPPED (needs root): the kernel matrix (eBPF tests in VMs on Linux 6.1 and 6.12)"
  else
    echo "== kernel matrix: bash scripts/kernel_matrix.sh"
    km_log="$(mktemp)"
    bash scripts/kernel_matrix.sh 2>&1 | tee "$km_log"
    km_status=${PIPESTATUS[0]}
    km_line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$km_log" | tail -n 1)"
    rm -f "$km_log"
    if [[ -n "$km_line" ]]; then
      passed=$((passed + $(cut -d' ' -f1 <<<"$km_line")))
      failed=$((failed + $(cut -d' ' -f3 <<<"$km_line")))
    fi
    if [[ $km_status -ne 0 && ( -z "$km_line" || "$(cut -d' ' -f3 <<<"$km_line")" == 0 ) ]]; then
      failed=$((failed + 1))
      echo "== kernel matrix exited with status $km_status"
    fi
  fi
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
