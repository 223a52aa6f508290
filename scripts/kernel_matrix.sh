#!/usr/bin/env bash
# The kernel matrix: runs the eBPF tests inside VMs booted on other kernels than the host's.
#
#   scripts/kernel_matrix.sh [--tests "FILE..."] [KERNEL...]     (default kernels: 6.1 6.12)
#
# KERNEL is a Debian cloud kernel series: 6.1 (bookworm's, no TCX) or 6.12 (TCX), the newest package of that
# series the machine's apt knows. For each kernel: boots it under QEMU (KVM when it works, else TCG) on a
# cached Debian 12 root image, hands the sources, BPF objects and tests in on a second disk, runs them with
# `deno test`, reads the result back from that disk, and prints one line per kernel. The last line is
# "N passed, N failed": the tests over all kernels (a kernel that does not boot or finish counts one failure).
# Exit 0 only if every kernel booted and passed.
#
# Cached under $FLOWD_GO_TOOLCHAIN/kernel-matrix (default ~/.cache/flowd-go-toolchain): the root image (keyed
# by mirror, packages and Deno runtime) and the kernels, so a re-run costs only the boots.
# Environment: FLOWD_GO_VM_ACCEL=kvm|tcg (default: kvm if a probe boot works, else tcg), FLOWD_GO_VM_TIMEOUT
# (seconds per kernel, default 900), FLOWD_GO_VM_JOBS (kernels booted at once, default all: a TCG guest
# keeps about one host core busy), FLOWD_GO_VM_LOG (keep each kernel's console and test log in this dir).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
log() { echo "kernel-matrix: $*" >&2; }
fail() {
  log "$*"
  echo "0 passed, 1 failed"
  exit 1
}

# The eBPF tests that must hold on every kernel (their own skips say what a kernel lacks), and on kernels
# without TCX (before 6.6) the clsact hook tests too (filter no_tcx_filter): there the fallback is the only
# way in. The other hook tests run on the host; leaving them out keeps both boots within CI's budget.
default_tests="tests/privileged/kernel_hz_test.ts tests/privileged/marker_prog_test.ts
  tests/privileged/marker_daemon_test.ts tests/privileged/marker_adoption_test.ts
  tests/privileged/marker_clean_cli_test.ts tests/privileged/skops_test.ts
  tests/privileged/iperf3_plugin_test.ts"
no_tcx_tests="tests/privileged/marker_attach_test.ts"
no_tcx_filter='/^marker attach (tc: |on a kernel without TCX)/'
tests=""
kernels=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tests)
      tests="$2" # exactly these, on every kernel
      shift 2
      ;;
    -h | --help)
      sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      kernels+=("$1")
      shift
      ;;
  esac
done
[[ ${#kernels[@]} -gt 0 ]] || kernels=(6.1 6.12)
[[ "$(id -u)" == 0 ]] || fail "needs root (debootstrap, loop-free image building, and the tests inside need it)"
for tool in qemu-system-x86_64 debootstrap mkfs.ext4 debugfs dpkg-deb apt-get; do
  command -v "$tool" >/dev/null || fail "$tool not found (scripts/setup.sh installs it as root)"
done

deno_bin="$(bash scripts/setup.sh | tail -n 1)" || fail "setup failed"
toolchain="${FLOWD_GO_TOOLCHAIN:-$HOME/.cache/flowd-go-toolchain}"
cache="$toolchain/kernel-matrix"
mkdir -p "$cache"
scratch="$(mktemp -d /tmp/flowd-go-kmatrix.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT

# --- the root image ---------------------------------------------------------------------------------------
mirror="$(sed -n 's|^URIs: *\(\S*/debian\)/\?$|\1|p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
[[ -n "$mirror" ]] || mirror="$(sed -n 's|^deb \(\[[^]]*\] \)\?\(\S*/debian\)/\? bookworm .*|\2|p' /etc/apt/sources.list 2>/dev/null | head -n 1)"
[[ -n "$mirror" ]] || fail "cannot find the Debian mirror in /etc/apt"
# What the tests call: ip/tc, tcpdump + tshark (captures), iperf3, python3, bpftool, modprobe.
packages="iproute2,libbpf1,kmod,tcpdump,tshark,iperf3,python3,bpftool,procps"
deno_version="$("$deno_bin" --version | head -n 1 | cut -d' ' -f2)"

ROOT_DISK_ID=f10d6001 # the MBR disk signature of the root image: root=PARTUUID=f10d6001-01

# The guest's init: mounts what the tests need, runs /data/run.sh, records its exit code, powers off.
write_init() {
  cat >"$1" <<'EOF'
#!/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs shm /dev/shm
ip link set lo up
hostname flowd-go-vm
# The data disk is the NVMe namespace without a partition table (the root is partition 1 of the other).
data=""
for b in /sys/block/nvme*; do
  n=${b##*/}
  [ -e "$b/${n}p1" ] || data=/dev/$n
done
echo "flowd-init: up on $(uname -r), data disk ${data:-missing}"
if [ -n "$data" ] && mount -t ext4 "$data" /data; then
  sh /data/run.sh >/data/log 2>&1
  echo $? >/data/rc
  tail -n 3 /data/log
  sync
  umount /data
fi
echo "flowd-init: done"
echo o >/proc/sysrq-trigger
sleep 10
EOF
  chmod 0755 "$1"
}

build_root() {
  log "building the root image (debootstrap bookworm from $mirror, a few minutes; cached as $root_image)"
  local tree="$scratch/root"
  debootstrap --variant=minbase --include="$packages" bookworm "$tree" "$mirror" >"$scratch/debootstrap.log" 2>&1 ||
    { tail -n 20 "$scratch/debootstrap.log" >&2; fail "debootstrap failed"; }
  rm -rf "$tree/var/cache/apt/archives/"*.deb "$tree/usr/share/doc" "$tree/usr/share/man"
  install -D -m 0755 "$deno_bin" "$tree/opt/deno/deno"
  mkdir -p "$tree/data" "$tree/sys/fs/bpf"
  install -m 0755 "$scratch/init" "$tree/flowd-init"
  local size_mb=$(($(du -sm "$tree" | cut -f1) + 300))
  mkfs.ext4 -q -F -L flowd-root -d "$tree" "$root_image.tmp" "${size_mb}M" || fail "mkfs.ext4 of the root failed"
  rm -rf "$tree"
  # One MBR partition holding the file system, so the kernel finds its root by PARTUUID: NVMe namespaces
  # are scanned in parallel, and /dev/nvme0n1 is not always the first one given.
  local fs_bytes
  fs_bytes=$(stat -c %s "$root_image.tmp")
  truncate -s $((fs_bytes + 1024 * 1024)) "$root_image.disk"
  python3 - "$root_image.disk" "$ROOT_DISK_ID" "$((fs_bytes / 512))" <<'PY' || fail "cannot write the partition table"
import struct, sys
path, disk_id, sectors = sys.argv[1], int(sys.argv[2], 16), int(sys.argv[3])
entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, sectors)  # Linux, from 1 MiB
with open(path, "r+b") as f:
    f.seek(440); f.write(struct.pack("<I", disk_id) + b"\0\0" + entry + b"\0" * 48 + b"\x55\xaa")
PY
  dd if="$root_image.tmp" of="$root_image.disk" bs=1M seek=1 conv=notrunc,sparse status=none ||
    fail "cannot copy the root file system into its disk image"
  rm -f "$root_image.tmp" "$cache"/root-*.img "$cache"/root-*.ext4 # images of other packages or inits are not used again
  mv "$root_image.disk" "$root_image"
}
write_init "$scratch/init"
root_key="$(printf '%s\n' "$mirror" "$packages" "$deno_version" "$(sha256sum <"$scratch/init")" | sha256sum | cut -c1-16)"
root_image="$cache/root-$root_key.img"
[[ -f "$root_image" ]] || build_root

# --- the kernels ------------------------------------------------------------------------------------------
# Prints the directory holding vmlinuz and lib/modules of the newest cloud kernel of series $1.
kernel_dir() {
  local series="$1" pattern pkg
  case "$series" in
    6.1) pattern='^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' ;;
    6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$' ;;
    *) pattern="^linux-image-${series//./\\.}[.-].*-cloud-amd64$" ;;
  esac
  pkg="$(apt-cache search --names-only "$pattern" 2>/dev/null | cut -d' ' -f1 | sort -V | tail -n 1)"
  [[ -n "$pkg" ]] || { log "$series: apt knows no Debian cloud kernel package of that series"; return 1; }
  local dir="$cache/kernel-$pkg"
  if [[ ! -f "$dir/vmlinuz" || ! -f "$dir/config" ]]; then
    log "fetching $pkg"
    local dl="$scratch/dl-$series"
    mkdir -p "$dl" && chmod 0777 "$dl"
    (cd "$dl" && apt-get download "$pkg" >/dev/null 2>&1) || { log "$series: apt-get download $pkg failed"; return 1; }
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    dpkg-deb -x "$dl"/*.deb "$dir.tmp/x" || return 1
    cp "$dir.tmp"/x/boot/vmlinuz-* "$dir.tmp/vmlinuz"
    cp "$dir.tmp"/x/boot/config-* "$dir.tmp/config"
    mkdir -p "$dir.tmp/lib" && mv "$dir.tmp/x/lib/modules" "$dir.tmp/lib/modules"
    # The package's postinst would run depmod; modprobe in the guest needs its modules.dep.
    depmod -b "$dir.tmp" "$(ls "$dir.tmp/lib/modules")" || { log "$series: depmod failed"; return 1; }
    rm -rf "$dir.tmp/x" "$dir"
    mv "$dir.tmp" "$dir"
  fi
  # Older packages of the series are not used again.
  for old in "$cache"/kernel-*; do
    [[ "$old" != "$dir" && "$(basename "$old")" =~ ${pattern:1:-1} ]] 2>/dev/null && rm -rf "$old"
  done
  echo "$dir"
}

# --- the program under test: the bundle form, as the RPM ships it -----------------------------------------
dist="$scratch/dist"
bash scripts/build.sh --out "$dist" --form bundle >"$scratch/build.log" 2>&1 ||
  { tail -n 20 "$scratch/build.log" >&2; fail "scripts/build.sh failed"; }

# --- one boot ---------------------------------------------------------------------------------------------
# The data disk: the sources and tests, the kernel's modules, the script the guest runs.
make_data() {
  local kdir="$1" out="$2" time_scale="$3" series="$4" tree="$scratch/data-tree-$4" run_tests="$tests" hook_tests=""
  if [[ -z "$run_tests" ]]; then
    run_tests="$default_tests"
    [[ "$(printf '%s\n' "$series" 6.6 | sort -V | head -n 1)" == 6.6 ]] || hook_tests="$no_tcx_tests"
  fi
  rm -rf "$tree" && mkdir -p "$tree/repo/bpf" "$tree/modules"
  cp -R src ffi tests deno.json deno.lock node_modules "$tree/repo/"
  cp -R bpf/build "$tree/repo/bpf/build"
  cp -R "$kdir/lib/modules/." "$tree/modules/"
  cp -R "$dist" "$tree/dist"
  # For the tests only (kernel_hz_test compares with it): the daemon inside sees no kernel configuration.
  cp "$kdir/config" "$tree/kernel-config"
  cat >"$tree/run.sh" <<EOF
set -u
mkdir -p /lib/modules && mount --bind /data/modules /lib/modules
for m in veth sch_ingress cls_bpf tun 8021q; do modprobe \$m || echo "modprobe \$m failed"; done
cd /data/repo
export DENO_DIR=/tmp/deno-dir NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 FLOWD_GO_TOOLCHAIN=/tmp/toolchain
export FLOWD_GO_TEST_TIME_SCALE=$time_scale FLOWD_GO_TEST_KERNEL_CONFIG=/data/kernel-config
# The daemon the tests start is the built program (what the RPM ships): no TypeScript to transpile under TCG.
export FLOWD_GO_BIN=/data/dist/bin/flowd-go
\$FLOWD_GO_BIN version >/dev/null # fills its code cache before the first timed wait
echo "kernel \$(uname -r)"
/opt/deno/deno test --allow-all --no-check --node-modules-dir=manual $(echo $run_tests)
rc=\$?
if [ -n "$hook_tests" ]; then
  /opt/deno/deno test --allow-all --no-check --node-modules-dir=manual --filter "$no_tcx_filter" $hook_tests || rc=1
fi
exit \$rc
EOF
  local size_mb=$(($(du -sm "$tree" | cut -f1) + 200))
  mkfs.ext4 -q -F -L flowd-data -d "$tree" "$out" "${size_mb}M" || return 1
  rm -rf "$tree"
}

# Boots $1 (vmlinuz) with the data disk $2 and accelerator $3; waits at most $4 seconds; console to $5.
boot() {
  local vmlinuz="$1" data="$2" accel="$3" limit="$4" console="$5" cpu=max
  [[ "$accel" == kvm ]] && cpu=host
  timeout --kill-after=5 "$limit" qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -m 2048 -smp 2 \
    -nographic -no-reboot -nic none \
    -kernel "$vmlinuz" -append "root=PARTUUID=$ROOT_DISK_ID-01 rootwait rw init=/flowd-init console=ttyS0 panic=-1 quiet" \
    -device nvme,id=nvme0,serial=flowd-go \
    -drive "file=$root_image,if=none,id=root,format=raw,snapshot=on" -device nvme-ns,drive=root,bus=nvme0,nsid=1 \
    -drive "file=$data,if=none,id=data,format=raw" -device nvme-ns,drive=data,bus=nvme0,nsid=2 \
    </dev/null >"$console" 2>&1
}

accel="${FLOWD_GO_VM_ACCEL:-}"
limit="${FLOWD_GO_VM_TIMEOUT:-900}"
jobs="${FLOWD_GO_VM_JOBS:-${#kernels[@]}}"

# Finds each kernel first (downloads are not done concurrently), then picks the accelerator once.
declare -A kdirs=()
for k in "${kernels[@]}"; do
  kdirs[$k]="$(kernel_dir "$k")" || kdirs[$k]=""
done
if [[ -z "$accel" ]]; then
  # KVM where it really works: a nested software hypervisor may accept the VM and then fail the kernel.
  accel=tcg
  probe_kernel=""
  for k in "${kernels[@]}"; do [[ -n "${kdirs[$k]}" ]] && probe_kernel="${kdirs[$k]}" && break; done
  if [[ -w /dev/kvm && -n "$probe_kernel" ]]; then
    probe="$scratch/probe.ext4"
    mkfs.ext4 -q -F "$probe" 8M
    if (boot "$probe_kernel/vmlinuz" "$probe" kvm 60 "$scratch/probe.log") 2>/dev/null &&
      grep -q "flowd-init: done" "$scratch/probe.log"; then
      accel=kvm
    fi
    log "KVM probe: $([[ $accel == kvm ]] && echo works || echo "does not boot this kernel, using TCG")"
  fi
fi
# The tests' waiting bounds (never what they measure) stretched for an emulated CPU.
time_scale="$([[ $accel == kvm ]] && echo 1 || echo 6)"

# Boots kernel $1 and writes "<passed> <failed>" to $scratch/counts-$1 and its summary line to
# $scratch/line-$1. Kernels run concurrently: under TCG most of a VM's time is one busy vCPU thread.
run_kernel() {
  local k="$1" kdir="${kdirs[$1]}" started=$SECONDS
  local data="$scratch/data-$k.ext4" console="$scratch/console-$k.log"
  if [[ -z "$kdir" ]]; then
    echo "0 1" >"$scratch/counts-$k"
    echo "$k: no kernel (see above)" >"$scratch/line-$k"
    return
  fi
  make_data "$kdir" "$data" "$time_scale" "$k" || {
    echo "0 1" >"$scratch/counts-$k"
    echo "$k: cannot make the data disk" >"$scratch/line-$k"
    return
  }
  log "$k: booting $(basename "$kdir") under $accel"
  boot "$kdir/vmlinuz" "$data" "$accel" "$limit" "$console"
  local rc counts verdict
  rc="$(debugfs -R 'cat /rc' "$data" 2>/dev/null | tr -d '[:space:]')"
  debugfs -R 'cat /log' "$data" >"$scratch/test-$k.log" 2>/dev/null
  local took=$((SECONDS - started))
  # One summary per deno test run inside: add them up.
  counts="$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$scratch/test-$k.log" |
    sed -nE 's/.*\| ([0-9]+) passed.*\| ([0-9]+) failed.*/\1 \2/p' |
    awk '{p += $1; f += $2} END {if (NR) printf "%d passed, %d failed in %d runs", p, f, NR}')"
  if ! grep -q "flowd-init: up" "$console"; then
    verdict="did not boot"
    tail -n 20 "$console" >&2
  elif [[ -z "$rc" ]]; then
    verdict="booted, tests did not finish (timeout ${limit}s?)"
    tail -n 30 "$scratch/test-$k.log" >&2
  elif [[ "$rc" == 0 ]]; then
    verdict="booted, tests passed: $counts"
  else
    verdict="booted, tests FAILED (exit $rc): $counts"
    grep -E '^(.* \.\.\. FAILED|error:|  at )' "$scratch/test-$k.log" | head -n 40 >&2
  fi
  if [[ -n "${FLOWD_GO_VM_LOG:-}" ]]; then
    mkdir -p "$FLOWD_GO_VM_LOG"
    cp "$console" "$scratch/test-$k.log" "$FLOWD_GO_VM_LOG/"
  fi
  local line="$k ($(basename "$kdir" | sed 's/^kernel-linux-image-//'), $accel): $verdict, ${took}s"
  log "$line"
  local k_passed k_failed
  k_passed="$(sed -nE 's/^([0-9]+) passed.*/\1/p' <<<"$counts")"
  k_failed="$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$counts")"
  k_failed=${k_failed:-0}
  # A kernel that did not boot, did not finish, or failed outside the tests still counts as a failure.
  if [[ "$rc" != 0 && "$k_failed" == 0 ]]; then k_failed=1; fi
  echo "${k_passed:-0} $k_failed" >"$scratch/counts-$k"
  echo "$line" >"$scratch/line-$k"
  rm -rf "$data" "$scratch/data-tree-$k"
}

matrix_started=$SECONDS
running=0
for k in "${kernels[@]}"; do
  if ((running >= jobs)); then
    wait -n
    running=$((running - 1))
  fi
  run_kernel "$k" &
  running=$((running + 1))
done
wait
passed=0
failed=0
for k in "${kernels[@]}"; do
  read -r p f <"$scratch/counts-$k" 2>/dev/null || { p=0 f=1; }
  passed=$((passed + p))
  failed=$((failed + f))
  echo "kernel $(cat "$scratch/line-$k" 2>/dev/null || echo "$k: no result")"
done
echo "kernel matrix: $((SECONDS - matrix_started))s for ${#kernels[@]} kernel(s), $jobs at a time"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
