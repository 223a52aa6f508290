#!/usr/bin/env bash
# Compiles every bpf/<name>.bpf.c into bpf/build/<name>.bpf.o and its debug variant bpf/build/<name>-dbg.bpf.o
# (-DDEBUG: bpf_printk traces). An object newer than its source, the headers in bpf/ and this script is kept.
#
# Needs clang (BPF target), the kernel uapi headers (linux-libc-dev) and libbpf's BPF headers (libbpf-dev);
# scripts/setup.sh installs them when run as root. No vmlinux.h and no BTF of the build host are needed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src_dir="$here/bpf"
out_dir="$src_dir/build"
CLANG="${CLANG:-clang}"

fail() {
  printf 'build_bpf: %s\n' "$*" >&2
  exit 1
}

command -v "$CLANG" >/dev/null 2>&1 ||
  fail "'$CLANG' not found: install clang (Debian: apt-get install clang, or run scripts/setup.sh as root)"
"$CLANG" -print-targets 2>/dev/null | grep -qw bpf ||
  fail "'$CLANG' cannot generate BPF code (no 'bpf' in 'clang -print-targets')"

# The uapi headers include <asm/types.h>, which lives in the multiarch directory; -target bpf does not add it.
multiarch="$("$CLANG" -print-multiarch 2>/dev/null || true)"
[[ -n "$multiarch" ]] || multiarch="$(uname -m)-linux-gnu"
asm_dir="/usr/include/$multiarch"
[[ -f "$asm_dir/asm/types.h" ]] || asm_dir="/usr/include"
[[ -f "$asm_dir/asm/types.h" ]] ||
  fail "kernel uapi headers not found (no asm/types.h under /usr/include/$multiarch): install linux-libc-dev"
[[ -f /usr/include/bpf/bpf_helpers.h ]] ||
  fail "libbpf's BPF headers not found (/usr/include/bpf/bpf_helpers.h): install libbpf-dev"

mkdir -p "$out_dir"
shopt -s nullglob
sources=("$src_dir"/*.bpf.c)
headers=("$src_dir"/*.h)
(( ${#sources[@]} )) || fail "no bpf/*.bpf.c sources found"

# True when $1 is missing or older than any of the remaining arguments.
stale() {
  local target="$1"
  shift
  [[ -e "$target" ]] || return 0
  local dep
  for dep in "$@"; do
    [[ "$dep" -nt "$target" ]] && return 0
  done
  return 1
}

built=0
for src in "${sources[@]}"; do
  name="$(basename "$src" .bpf.c)"
  for variant in release debug; do
    if [[ "$variant" == debug ]]; then
      obj="$out_dir/$name-dbg.bpf.o"
      defines=(-DDEBUG)
    else
      obj="$out_dir/$name.bpf.o"
      defines=()
    fi
    stale "$obj" "$src" "${headers[@]}" "${BASH_SOURCE[0]}" || continue
    tmp="$obj.tmp.$$"
    if ! "$CLANG" -target bpf -O2 -g -Wall -Werror "${defines[@]}" \
      -I "$src_dir" -idirafter "$asm_dir" -c "$src" -o "$tmp"; then
      rm -f "$tmp"
      fail "compiling $src ($variant) failed"
    fi
    mv -f "$tmp" "$obj"
    built=$((built + 1))
    printf 'build_bpf: built %s\n' "${obj#"$here"/}" >&2
  done
done
if (( built == 0 )); then
  printf 'build_bpf: %d object(s) up to date\n' "$(( ${#sources[@]} * 2 ))" >&2
fi
