#!/usr/bin/env bash
# Builds the distributable flowd-go into dist/ (or --out DIR), offline:
#
#   1. the BPF objects (scripts/build_bpf.sh);
#   2. the JavaScript bundle of the daemon (`deno bundle`) in a temporary copy of the sources whose
#      src/build_info.json carries the commit; the BPF objects, the registry and the version are inside it:
#      one file for `deno compile`, or split into chunks for the bundle form, so that each command loads
#      only the components it uses;
#   3. the man page, rendered to roff with pandoc (or taken pre-rendered from man/flowd-go.1, as the source
#      tarball ships it);
#   4. one of two forms, the same program in both:
#      - compile: `deno compile` of the bundle into one executable, when a denort runtime of exactly the
#        pinned Deno version is at hand: DENORT_BIN (a denort executable), DENORT_ZIP (the release archive
#        denort-x86_64-unknown-linux-gnu.zip), or that archive already in $DENO_DIR/dl/release/v<version>/;
#      - bundle (fallback): the bundle and the pinned Deno runtime side by side under libexec/flowd-go/,
#        run by the bin/flowd-go launcher.
#
# Layout of the output, a prefix tree that mirrors /usr:
#   bin/flowd-go                     the executable (compile) or the launcher (bundle)
#   libexec/flowd-go/{deno,app/main.js,app/*.js}   bundle form only
#   share/man/man1/flowd-go.1.gz
#   flowd-go -> bin/flowd-go, build-form ("compile" or "bundle")
#
# Usage: scripts/build.sh [--out DIR] [--form auto|compile|bundle]
# Environment: FLOWD_GO_DENO (the deno to build with; default: the toolchain of scripts/setup.sh),
#              DENORT_BIN, DENORT_ZIP, DENO_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$here/dist"
form="auto"
TARGET="x86_64-unknown-linux-gnu"

log() { printf 'build: %s\n' "$*" >&2; }
fail() {
  printf 'build: %s\n' "$*" >&2
  exit 1
}

while (($#)); do
  case "$1" in
    --out)
      [[ $# -ge 2 ]] || fail "--out needs a directory"
      out="$2"
      shift 2
      ;;
    --form)
      [[ $# -ge 2 ]] || fail "--form needs auto, compile or bundle"
      form="$2"
      shift 2
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) fail "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$form" =~ ^(auto|compile|bundle)$ ]] || fail "--form must be auto, compile or bundle, not '$form'"
[[ "$(uname -m)" == x86_64 ]] || fail "only x86_64 builds are supported (the pinned runtime is $TARGET)"

deno_version="$(sed -n 's/^DENO_VERSION="\(.*\)"$/\1/p' "$here/scripts/setup.sh")"
[[ -n "$deno_version" ]] || fail "no DENO_VERSION=\"...\" line in scripts/setup.sh"

# --- the deno to build with, and the one the bundle form ships: exactly the pinned version ---------------
if [[ -n "${FLOWD_GO_DENO:-}" ]]; then
  deno_bin="$FLOWD_GO_DENO"
else
  deno_bin="$(bash "$here/scripts/setup.sh" | tail -n 1)" || fail "toolchain setup failed (scripts/setup.sh)"
fi
[[ -x "$deno_bin" ]] || fail "deno not found or not executable at '$deno_bin' (set FLOWD_GO_DENO)"
have_version="$("$deno_bin" --version 2>/dev/null | head -n 1 | cut -d' ' -f2)"
[[ "$have_version" == "$deno_version" ]] ||
  fail "$deno_bin is Deno '$have_version', the build needs exactly $deno_version (scripts/setup.sh installs it)"
export DENO_NO_UPDATE_CHECK=1 NO_COLOR=1

# A value of deno.json, one line per array item.
deno_json() {
  FIELD="$1" FILE="$here/deno.json" "$deno_bin" eval --no-config \
    'const v = JSON.parse(Deno.readTextFileSync(Deno.env.get("FILE")))[Deno.env.get("FIELD")] ?? [];
     console.log([v].flat().join("\n"));'
}

# --- the output directory: only ever replace an earlier build ---------------------------------------------
mkdir -p "$out"
out="$(cd "$out" && pwd)"
if [[ -n "$(ls -A "$out")" && ! -e "$out/build-form" ]]; then
  fail "$out is not empty and holds no earlier build (no build-form file): refusing to replace it"
fi
find "$out" -mindepth 1 -delete
echo incomplete >"$out/build-form"

stage="$(mktemp -d "${TMPDIR:-/tmp}/flowd-go-build.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# --- 1. BPF objects ---------------------------------------------------------------------------------------
bash "$here/scripts/build_bpf.sh"

# --- 2. the bundle, from a copy of the sources that carries the commit -------------------------------------
if [[ "$(git -C "$here" rev-parse --show-toplevel 2>/dev/null)" == "$here" ]]; then
  commit="$(git -C "$here" describe --always --dirty --abbrev=40)"
else
  # A source tarball: scripts/package.sh wrote the commit into src/build_info.json.
  commit="$(sed -n 's/.*"commit": *"\([^"]*\)".*/\1/p' "$here/src/build_info.json")"
fi
[[ -n "$commit" ]] || fail "cannot tell the commit: not a git checkout and src/build_info.json has none"
version="$(deno_json version)"

mkdir -p "$stage/tree/bpf"
cp -R "$here/src" "$here/ffi" "$here/deno.json" "$here/deno.lock" "$stage/tree/"
cp -R "$here/bpf/build" "$stage/tree/bpf/build"
printf '{ "commit": "%s" }\n' "$commit" >"$stage/tree/src/build_info.json"
# Unstable features of deno.json: needed to bundle (raw-imports) and baked into the runtime flags.
mapfile -t unstable < <(deno_json unstable)
unstable_flags=()
for u in "${unstable[@]}"; do unstable_flags+=("--unstable-$u"); done
# V8 flags from scripts/v8-flags (why each: the comments there).
mapfile -t v8_flags < <(grep -v '^[[:space:]]*\(#\|$\)' "$here/scripts/v8-flags")
runtime_flags=("${unstable_flags[@]}")
[[ ${#v8_flags[@]} -eq 0 ]] || runtime_flags+=("--v8-flags=$(IFS=,; echo "${v8_flags[*]}")")

# yaml's ESM build: Deno resolves the package's CommonJS `node` export, which the bundle would load through
# Node's module system at every start; src/config/yaml.ts is pointed at the ESM files of the locked version
# in the Deno cache the bundler reads (the vendored one in a source tarball).
yaml_version="$(FILE="$here/deno.lock" "$deno_bin" eval --no-config \
  'const l = JSON.parse(Deno.readTextFileSync(Deno.env.get("FILE")));
   console.log(Object.entries(l.specifiers ?? {}).find(([k]) => k.startsWith("npm:yaml@"))?.[1] ?? "");')"
[[ -n "$yaml_version" ]] || fail "deno.lock pins no npm:yaml version"
npm_cache="$("$deno_bin" info --json --no-config | "$deno_bin" eval --no-config \
  'console.log(JSON.parse(await new Response(Deno.stdin.readable).text()).npmCache)')"
yaml_esm=""
for candidate in "$npm_cache"/*/yaml/"$yaml_version" "$(readlink -f "$here/node_modules/yaml" 2>/dev/null)"; do
  if [[ -f "$candidate/browser/dist/index.js" ]] &&
    grep -q "\"version\": *\"$yaml_version\"" "$candidate/package.json" 2>/dev/null; then
    yaml_esm="$candidate/browser/dist/index.js"
    break
  fi
done
[[ -n "$yaml_esm" ]] || fail "yaml $yaml_version is not in the Deno cache ($npm_cache): run scripts/setup.sh"
sed -i "s|from \"yaml\";|from \"file://$yaml_esm\";|" "$stage/tree/src/config/yaml.ts"
grep -q "file://" "$stage/tree/src/config/yaml.ts" || fail "could not point src/config/yaml.ts at $yaml_esm"

log "bundling flowd-go $version ($commit)"
# No node_modules: npm packages come from the Deno cache exactly as deno.lock pins them.
# One file for deno compile; chunks (one per dynamic import: each command, each component) for the bundle
# form, so that `version` does not compile the daemon and `run` compiles only the configured components.
# logtape's "browser" condition: its node build imports node:util, the one Node module the start-up of
# `version` or `help` would load (Node's compatibility layer is then set up, ~12 ms).
bundle() {
  (cd "$stage/tree" && DENO_CONDITIONS=browser "$deno_bin" bundle --quiet --frozen --node-modules-dir=none \
    --platform deno "$@" src/main.ts) || fail "deno bundle failed (are the npm packages in the Deno cache? run scripts/setup.sh, or give DENO_DIR the vendored cache)"
}
bundle -o "$stage/flowd-go.js"
bundle --code-splitting --outdir "$stage/app"
# The bundler's shim for CommonJS `require` calls createRequire from node:module at load, whichever
# command runs; made lazy, only a CommonJS package that requires a Node module (prom-client) pays for it.
shim='import { createRequire as __deno_internal_createRequire } from "node:module";'
lazy='var __deno_internal_createRequire = (url) => { let r; return (id) => (r ??= process.getBuiltinModule("node:module").createRequire(url))(id); };'
for f in "$stage/flowd-go.js" "$stage"/app/*.js; do
  if grep -qF "$shim" "$f"; then
    sed -i "s|^${shim}\$|${lazy}|" "$f"
    ! grep -qF "$shim" "$f" || fail "could not make the createRequire shim of $(basename "$f") lazy"
  fi
done
[[ -f "$stage/app/main.js" ]] || fail "the split bundle has no app/main.js"
# Deno loads (and, without a cache, parses) every module a string-literal import() names before the
# program starts, so every command would read all chunks; resolved at run time, a chunk is loaded only
# when its import runs (`version` reads 8 files instead of 61: 70 -> 25 ms without a code cache).
sed -E -i 's/import\("(\.\/[A-Za-z0-9_-]+\.js)"\)/import(import.meta.resolve("\1"))/g' "$stage"/app/*.js
! grep -qE 'import\("\./' "$stage"/app/*.js || fail "a chunk import of the split bundle is still a string literal"
if grep -qE '(from|import\() *"(npm|jsr|https?):' "$stage/flowd-go.js" "$stage"/app/*.js; then
  fail "the bundle still imports remote or npm modules; it would need the network at run time"
fi

# --- 3. the man page --------------------------------------------------------------------------------------
mkdir -p "$out/share/man/man1"
if command -v pandoc >/dev/null 2>&1; then
  pandoc --standalone --from markdown --to man "$here/man/flowd-go.1.md" -o "$stage/flowd-go.1"
elif [[ -f "$here/man/flowd-go.1" ]]; then
  log "no pandoc: using the pre-rendered man/flowd-go.1"
  cp "$here/man/flowd-go.1" "$stage/flowd-go.1"
else
  fail "pandoc not found and no pre-rendered man/flowd-go.1: install pandoc (Debian: apt-get install pandoc)"
fi
gzip -9n <"$stage/flowd-go.1" >"$out/share/man/man1/flowd-go.1.gz"

# --- 4. the form ------------------------------------------------------------------------------------------
deno_dir="${DENO_DIR:-${HOME:-/root}/.cache/deno}"
cached_zip="$deno_dir/dl/release/v$deno_version/denort-$TARGET.zip"
denort=""
denort_from=""
if [[ -n "${DENORT_BIN:-}" ]]; then
  denort="$DENORT_BIN"
  denort_from="DENORT_BIN"
elif [[ -n "${DENORT_ZIP:-}" ]]; then
  [[ -f "$DENORT_ZIP" ]] || fail "DENORT_ZIP=$DENORT_ZIP does not exist"
  mkdir -p "$stage/denort"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$DENORT_ZIP" -d "$stage/denort" || fail "cannot unpack DENORT_ZIP=$DENORT_ZIP"
  else
    python3 -m zipfile -e "$DENORT_ZIP" "$stage/denort" || fail "cannot unpack DENORT_ZIP=$DENORT_ZIP (no unzip)"
  fi
  [[ -f "$stage/denort/denort" ]] || fail "DENORT_ZIP=$DENORT_ZIP holds no 'denort' file"
  chmod 0755 "$stage/denort/denort"
  denort="$stage/denort/denort"
  denort_from="DENORT_ZIP"
elif [[ -f "$cached_zip" ]]; then
  denort_from="$cached_zip"
fi
if [[ -n "$denort" ]]; then
  [[ -x "$denort" ]] || fail "$denort_from=$denort is not an executable file"
  # The full deno CLI is no denort: deno compile accepts it, but the result ignores the program in it.
  if "$denort" --version 2>/dev/null | head -n 1 | grep -q '^deno '; then
    fail "$denort_from points at the deno CLI, not at the denort runtime (denort-$TARGET.zip of Deno $deno_version)"
  fi
fi

if [[ "$form" == compile && -z "$denort_from" ]]; then
  fail "--form compile needs a denort runtime of Deno $deno_version: set DENORT_ZIP to denort-$TARGET.zip, DENORT_BIN to the unpacked denort, or put the archive at $cached_zip"
fi
if [[ "$form" == bundle || -z "$denort_from" ]]; then
  form="bundle"
else
  form="compile"
fi

mkdir -p "$out/bin"
if [[ "$form" == compile ]]; then
  log "compiling the single executable (denort from $denort_from)"
  compile_env=(DENO_DIR="$deno_dir")
  [[ -z "$denort" ]] || compile_env+=(DENORT_BIN="$denort")
  (cd "$stage" && env "${compile_env[@]}" "$deno_bin" compile --quiet --no-config --no-lock --no-check \
    --allow-all "${runtime_flags[@]}" -o "$out/bin/flowd-go" flowd-go.js) || fail "deno compile failed"
else
  log "no denort runtime at hand (DENORT_BIN, DENORT_ZIP or $cached_zip): building the FALLBACK form, the bundle and the Deno $deno_version runtime side by side behind a launcher"
  mkdir -p "$out/libexec/flowd-go"
  install -m 0755 "$deno_bin" "$out/libexec/flowd-go/deno"
  install -d "$out/libexec/flowd-go/app"
  install -m 0644 "$stage"/app/*.js "$out/libexec/flowd-go/app/"
  sed "s|@RUNTIME_FLAGS@|${runtime_flags[*]}|" "$here/scripts/launcher.sh.in" >"$stage/launcher"
  install -m 0755 "$stage/launcher" "$out/bin/flowd-go"
fi
ln -s bin/flowd-go "$out/flowd-go"
echo "$form" >"$out/build-form"

# --- 5. smoke test: the result runs on its own, from /, in an empty environment ----------------------------
smoke="$(cd / && env -i PATH=/usr/bin:/bin HOME="$stage" "$out/flowd-go" version 2>&1)" ||
  fail "the built flowd-go does not run: $smoke"
[[ "$smoke" == *"base version: $version"* && "$smoke" == *"built commit: $commit"* ]] ||
  fail "the built flowd-go prints an unexpected version: $smoke"
(cd / && env -i PATH=/usr/bin:/bin HOME="$stage" "$out/flowd-go" --conf builtin:quickstart conf >/dev/null) ||
  fail "the built flowd-go cannot print its configuration"

size="$(du -sh --apparent-size "$out" | cut -f1)"
log "built the $form form of flowd-go $version in $out ($size)"
if [[ "$form" == bundle ]]; then
  log "to build the single executable instead, hand the build the denort archive of Deno $deno_version: DENORT_ZIP=/path/to/denort-$TARGET.zip"
fi
