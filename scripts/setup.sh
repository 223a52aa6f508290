#!/usr/bin/env bash
# Idempotent toolchain setup for flowd-go development, tests and builds.
#
# - Deno, pinned, from the npm package `deno` into $FLOWD_GO_TOOLCHAIN (outside the source tree, so that
#   no package.json or node_modules ends up above or inside the sources).
# - When root: the Debian packages the eBPF parts, the tests and the packaging need.
# - The npm dependencies of deno.json (node_modules, as recorded in deno.lock).
#
# Prints the path of the deno binary on its last line of stdout; everything else goes to stderr.
set -euo pipefail

DENO_VERSION="2.9.6"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
toolchain="${FLOWD_GO_TOOLCHAIN:-${HOME:-/root}/.cache/flowd-go-toolchain}"
deno_bin="$toolchain/node_modules/@deno/linux-x64-glibc/deno"
stamp_dir="$toolchain/stamps"
mkdir -p "$stamp_dir"

log() { printf 'setup: %s\n' "$*" >&2; }

# 1. Deno from npm, pinned.
if [[ ! -x "$deno_bin" ]] || ! "$deno_bin" --version 2>/dev/null | grep -q "^deno $DENO_VERSION "; then
  command -v npm >/dev/null || { log "npm is required (Node.js) to install Deno"; exit 1; }
  log "installing deno $DENO_VERSION from npm into $toolchain"
  # The package's postinstall is not needed: the binary comes from its optional dependency.
  npm install --prefix "$toolchain" --no-audit --no-fund --no-save --loglevel=error \
    "deno@$DENO_VERSION" >&2
  "$deno_bin" --version >&2
fi

# 2. Debian packages (root only; others must install them by hand).
apt_packages=(clang llvm libbpf-dev libbpf1 bpftool iproute2 iperf3 tshark tcpdump
  libelf-dev linux-libc-dev pandoc rpm rpm2cpio cpio zip unzip strace prometheus systemd man-db
  debootstrap systemd-container wrk nfdump pmacct qemu-system-x86 kmod nats-server openssl)
apt_stamp="$stamp_dir/apt-$(printf '%s\n' "${apt_packages[@]}" | sha256sum | cut -c1-16)"
if [[ ! -e "$apt_stamp" ]]; then
  if [[ "$(id -u)" == "0" ]]; then
    missing=()
    for p in "${apt_packages[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if (( ${#missing[@]} )); then
      log "installing Debian packages: ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      # tshark asks whether non-root users may capture; the answer does not matter for root.
      echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
      apt-get update -qq >&2
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
    touch "$apt_stamp"
  else
    log "not root: skipping Debian packages (${apt_packages[*]}); tests needing them will say so"
  fi
fi

# 3. npm dependencies of the project, exactly as locked.
if [[ -f "$here/deno.lock" ]]; then
  (cd "$here" && "$deno_bin" install --frozen --quiet >&2)
fi

echo "$deno_bin"
