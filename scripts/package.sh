#!/usr/bin/env bash
# Makes the RPM in one step: the source tarball (sources, the commit, the pre-rendered man page, and a Deno
# cache holding every npm package the build needs), the Deno runtime archive, the denort archive when one is
# given, then `rpmbuild` with rpm/flowd-go.spec. The build itself needs no network: when run as root it runs
# in an empty network namespace, which proves it.
#
# Usage: scripts/package.sh [--out DIR] [--srpm]
#   --out DIR  rpmbuild top directory (default: rpmbuild/ in the source tree); the RPM lands in DIR/RPMS/
#   --srpm     also make the source RPM (for Koji or mock), in DIR/SRPMS/
# Environment: DENORT_ZIP (denort-x86_64-unknown-linux-gnu.zip of the pinned Deno) or DENORT_BIN (the
#   unpacked denort) to package the single executable; FLOWD_GO_DENO, DENO_DIR as for scripts/build.sh.
# Prints the path of the binary RPM on the last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
top="$here/rpmbuild"
build_mode="-bb"
TARGET="x86_64-unknown-linux-gnu"

log() { printf 'package: %s\n' "$*" >&2; }
fail() {
  printf 'package: %s\n' "$*" >&2
  exit 1
}

while (($#)); do
  case "$1" in
    --out)
      [[ $# -ge 2 ]] || fail "--out needs a directory"
      top="$2"
      shift 2
      ;;
    --srpm)
      build_mode="-ba"
      shift
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) fail "unknown argument '$1' (see --help)" ;;
  esac
done

for tool in rpmbuild git tar gzip zip; do
  command -v "$tool" >/dev/null 2>&1 ||
    fail "'$tool' not found: install it (Debian: apt-get install rpm git tar gzip zip, or run scripts/setup.sh as root)"
done
[[ "$(git -C "$here" rev-parse --show-toplevel 2>/dev/null)" == "$here" ]] ||
  fail "$here is not a git checkout: the source tarball is made from one"

start=$SECONDS
if [[ -n "${FLOWD_GO_DENO:-}" ]]; then
  deno_bin="$FLOWD_GO_DENO"
else
  deno_bin="$(bash "$here/scripts/setup.sh" | tail -n 1)" || fail "toolchain setup failed (scripts/setup.sh)"
fi
export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
user_deno_dir="${DENO_DIR:-${HOME:-/root}/.cache/deno}"
toolchain="${FLOWD_GO_TOOLCHAIN:-${HOME:-/root}/.cache/flowd-go-toolchain}"
cache="$toolchain/package-cache"
mkdir -p "$cache"

# --- versions: deno.json, the spec and the pinned Deno must agree ---------------------------------------
spec="$here/rpm/flowd-go.spec"
json_version="$(cd "$here" && "$deno_bin" eval --no-config \
  'console.log(JSON.parse(Deno.readTextFileSync("deno.json")).version)')"
rpm_version="${json_version//-/\~}"
spec_version="$(sed -n 's/^Version: *//p' "$spec")"
[[ "$spec_version" == "$rpm_version" ]] ||
  fail "rpm/flowd-go.spec has Version: $spec_version, deno.json has $json_version: set Version: $rpm_version"
deno_version="$(sed -n 's/^DENO_VERSION="\(.*\)"$/\1/p' "$here/scripts/setup.sh")"
spec_deno="$(sed -n 's/^%global deno_version *//p' "$spec")"
[[ "$spec_deno" == "$deno_version" ]] ||
  fail "rpm/flowd-go.spec pins Deno $spec_deno, scripts/setup.sh pins $deno_version: make them agree"
[[ "$("$deno_bin" --version | head -n 1 | cut -d' ' -f2)" == "$deno_version" ]] ||
  fail "$deno_bin is not Deno $deno_version"

rm -rf "$top"
mkdir -p "$top"/{SOURCES,SPECS,BUILD,RPMS,SRPMS}
top="$(cd "$top" && pwd)"
stage="$(mktemp -d "${TMPDIR:-/tmp}/flowd-go-package.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# --- Source0: the sources ---------------------------------------------------------------------------------
name="flowd-go-$rpm_version"
tree="$stage/$name"
mkdir -p "$tree"
commit="$(git -C "$here" describe --always --dirty --abbrev=40)"
# Tracked and new (not ignored) files, as they are in the working tree.
(cd "$here" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [[ -e "$f" || -L "$f" ]] && printf '%s\0' "$f"; done |
  xargs -0 cp -P --parents -t "$tree")
printf '{ "commit": "%s" }\n' "$commit" >"$tree/src/build_info.json"
# Rendered here, so that the builder needs no pandoc.
command -v pandoc >/dev/null 2>&1 || fail "pandoc not found: install it (Debian: apt-get install pandoc)"
pandoc --standalone --from markdown --to man "$here/man/flowd-go.1.md" -o "$tree/man/flowd-go.1"

# vendor/deno: a Deno cache with the npm packages deno.lock pins and the bundler's esbuild. It is seeded from
# this machine's Deno cache and completed by one bundle run; kept per deno.lock and Deno version.
lock_key="$(cat "$here/deno.lock" <(echo "$deno_version") | sha256sum | cut -c1-16)"
vendor_cache="$cache/vendor-deno-$lock_key"
if [[ ! -d "$vendor_cache" ]]; then
  log "making the vendored Deno cache (npm packages of deno.lock, esbuild)"
  seed="$stage/vendor-seed"
  mkdir -p "$seed/npm"
  mapfile -t packages < <(cd "$here" && "$deno_bin" eval --no-config '
    for (const key of Object.keys(JSON.parse(Deno.readTextFileSync("deno.lock")).npm ?? {})) {
      const at = key.indexOf("@", 1);
      console.log(key.slice(0, at) + "/" + key.slice(at + 1).split("_")[0]);
    }')
  for registry in "$user_deno_dir"/npm/*/; do
    r="$(basename "$registry")"
    for p in "${packages[@]}"; do
      pkg="${p%/*}" ver="${p##*/}"
      if [[ -d "$registry/$pkg/$ver" ]]; then
        mkdir -p "$seed/npm/$r/$pkg"
        cp -R "$registry/$pkg/$ver" "$seed/npm/$r/$pkg/"
        # A fresh `deno install` keeps the package metadata only for direct dependencies; the bundle run
        # below fetches whatever metadata it still needs.
        if [[ -f "$registry/$pkg/registry.json" ]]; then cp "$registry/$pkg/registry.json" "$seed/npm/$r/$pkg/"; fi
      fi
    done
  done
  if compgen -G "$user_deno_dir/dl/esbuild-*" >/dev/null; then
    mkdir -p "$seed/dl"
    cp -R "$user_deno_dir"/dl/esbuild-* "$seed/dl/"
  fi
  # One bundle with only this cache: it fetches whatever the seed lacked, so the cache is complete.
  mkdir -p "$stage/probe"
  cp -R "$here/src" "$here/ffi" "$here/deno.json" "$here/deno.lock" "$stage/probe/"
  # The bundle embeds the BPF objects: a fresh clone has none until they are built (kept when up to date).
  bash "$here/scripts/build_bpf.sh" >&2 || fail "cannot build the BPF objects (scripts/build_bpf.sh)"
  mkdir -p "$stage/probe/bpf" && cp -R "$here/bpf/build" "$stage/probe/bpf/build"
  (cd "$stage/probe" && DENO_DIR="$seed" "$deno_bin" bundle --quiet --frozen --node-modules-dir=none \
    --platform deno -o "$stage/probe.js" src/main.ts) || fail "cannot complete the vendored Deno cache"
  # Keep packages and downloads, not the cache databases of this run.
  find "$seed" -maxdepth 1 -type f -delete
  rm -rf "$vendor_cache.tmp" && mv "$seed" "$vendor_cache.tmp" && mv "$vendor_cache.tmp" "$vendor_cache"
fi
mkdir -p "$tree/vendor"
cp -R "$vendor_cache" "$tree/vendor/deno"

mtime="@$(git -C "$here" log -1 --format=%ct)"
tar --sort=name --mtime="$mtime" --owner=0 --group=0 --numeric-owner -C "$stage" -cf - "$name" |
  gzip -6n >"$top/SOURCES/$name.tar.gz"

# --- Source1: the Deno runtime, as the release archive (kept per binary) ----------------------------------
deno_key="$(sha256sum "$deno_bin" | cut -c1-16)"
deno_zip="$cache/deno-$deno_version-$TARGET-$deno_key.zip"
if [[ ! -f "$deno_zip" ]]; then
  log "archiving the Deno $deno_version runtime"
  mkdir -p "$stage/deno" && cp "$deno_bin" "$stage/deno/deno"
  (cd "$stage/deno" && zip -q -X -6 "$deno_zip.tmp" deno) && mv "$deno_zip.tmp" "$deno_zip"
fi
cp "$deno_zip" "$top/SOURCES/deno-$deno_version-$TARGET.zip"

# --- Source2: the denort runtime, when given ----------------------------------------------------------------
denort_source="$top/SOURCES/denort-$deno_version-$TARGET.zip"
cached_denort="$user_deno_dir/dl/release/v$deno_version/denort-$TARGET.zip"
if [[ -n "${DENORT_ZIP:-}" ]]; then
  [[ -f "$DENORT_ZIP" ]] || fail "DENORT_ZIP=$DENORT_ZIP does not exist"
  cp "$DENORT_ZIP" "$denort_source"
elif [[ -n "${DENORT_BIN:-}" ]]; then
  [[ -x "$DENORT_BIN" ]] || fail "DENORT_BIN=$DENORT_BIN is not an executable file"
  mkdir -p "$stage/denort" && cp "$DENORT_BIN" "$stage/denort/denort"
  (cd "$stage/denort" && zip -q -X "$denort_source" denort)
elif [[ -f "$cached_denort" ]]; then
  cp "$cached_denort" "$denort_source"
fi
if [[ -f "$denort_source" ]]; then
  log "packaging the single executable (denort archive in SOURCES)"
else
  log "no denort archive (DENORT_ZIP, DENORT_BIN or $cached_denort): packaging the FALLBACK form, the bundle and the Deno runtime under /usr/libexec/flowd-go"
fi

# --- rpmbuild ------------------------------------------------------------------------------------------------
cp "$spec" "$top/SPECS/"
args=("$build_mode" --clean --define "_topdir $top")
if ! rpm -q --whatprovides clang >/dev/null 2>&1; then
  # On Debian the rpm database knows none of the system's packages; scripts/setup.sh installs the
  # equivalents of the BuildRequires (clang, libbpf-dev, linux-libc-dev, unzip, gzip).
  log "the rpm database does not list this system's packages: not checking BuildRequires"
  args+=(--nodeps)
fi
prefix=()
if [[ "$(id -u)" == 0 ]] && command -v unshare >/dev/null 2>&1 && unshare --net true 2>/dev/null; then
  log "running rpmbuild in an empty network namespace: it cannot reach the network"
  prefix=(unshare --net)
fi
"${prefix[@]}" rpmbuild "${args[@]}" "$top/SPECS/flowd-go.spec" >"$top/rpmbuild.log" 2>&1 ||
  fail "rpmbuild failed; the end of $top/rpmbuild.log:
$(tail -n 30 "$top/rpmbuild.log")"

rpm_file="$(find "$top/RPMS" -name "flowd-go-*.rpm" | head -n 1)"
[[ -n "$rpm_file" ]] || fail "rpmbuild made no RPM (see $top/rpmbuild.log)"
log "built $(basename "$rpm_file") ($(du -h "$rpm_file" | cut -f1)) in $((SECONDS - start)) s"
echo "$rpm_file"
