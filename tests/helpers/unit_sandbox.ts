/**
 * Runs a systemd unit's Exec lines the way systemd would, on hosts where systemd is not PID 1 (containers,
 * CI), so that the unit's user, capabilities and file-system protection are tested with the real program:
 *
 * - the unpacked package is laid over /usr and /etc (overlayfs) in a private mount namespace, so the Exec
 *   lines run verbatim; an extra /etc layer can replace the configuration;
 * - RuntimeDirectory= and CacheDirectory= are scratch directories bind-mounted at /run/<name> and
 *   /var/cache/<name>, owned by the service user, kept between commands (the daemon and ExecStopPost share
 *   them as under systemd);
 * - ProtectSystem=strict (every other mount read-only, /proc/sys and /sys included), ProtectHome= and
 *   PrivateTmp= (empty /home, /root, /tmp, /var/tmp), and further paths hidden (the source tree);
 * - DynamicUser= (an unused uid of systemd's dynamic range), AmbientCapabilities=, CapabilityBoundingSet=,
 *   NoNewPrivileges=, LimitMEMLOCK= and the environment systemd gives, through setpriv; a "!" line runs as
 *   root within the bounding set.
 *
 * Not emulated: SystemCallFilter= and RestrictAddressFamilies= (seccomp; tests compare a trace of the
 * program with them instead), PrivateDevices=, and the Restrict*= and Protect*= settings that only forbid
 * operations the program never attempts.
 */
import { sh } from "./netns.ts";

/** A unit file: section → key → values (in order; a key may repeat). */
export type UnitFile = Map<string, Map<string, string[]>>;

/** Parses a unit file (comments, sections, key=value; no line continuations). */
export function parseUnit(text: string): UnitFile {
  const unit: UnitFile = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    if (line.endsWith("\\")) throw new Error(`line continuations are not supported: ${line}`);
    const eq = line.indexOf("=");
    if (!section || eq < 0) throw new Error(`not a unit file line: ${line}`);
    const key = line.slice(0, eq).trim();
    section.set(key, [...section.get(key) ?? [], line.slice(eq + 1).trim()]);
  }
  return unit;
}

/** The last value of a key of [Service], or undefined. */
export function serviceValue(unit: UnitFile, key: string): string | undefined {
  return unit.get("Service")?.get(key)?.at(-1);
}

/** The capability names of a capability setting, for setpriv ("CAP_BPF CAP_NET_ADMIN" → bpf,net_admin). */
function capList(value: string | undefined): string[] {
  return (value ?? "").split(/\s+/).filter(Boolean).map((c) => c.replace(/^CAP_/i, "").toLowerCase());
}

/** A sandbox for one unit; dispose to remove its scratch directories. */
export interface UnitSandbox extends AsyncDisposable {
  /** Host directory behind /run/<RuntimeDirectory>. */
  readonly runtimeDir: string;
  /** Host directory behind /var/cache/<CacheDirectory>. */
  readonly cacheDir: string;
  /** The service user (DynamicUser=yes: an unused uid). */
  readonly uid: number;
  /** The argv that runs one Exec line of the unit (plain, or with the "!" or "-" prefix) inside the sandbox. */
  command(execLine: string): string[];
  /** The argv that runs any command inside the sandbox as the service (not elevated). */
  exec(argv: string[]): string[];
}

export interface UnitSandboxOptions {
  unit: UnitFile;
  /** The unpacked package (holds usr/ and etc/). */
  packageRoot: string;
  /** A directory laid over /etc above the package's (for a test configuration). */
  extraEtc?: string;
  /** Host paths to hide behind empty read-only directories (the source tree). */
  hide?: string[];
  /** Run inside this prefix, such as `ip netns exec NS`. */
  prefix?: string[];
}

const SETUP = `
set -euo pipefail
mount -t overlay unit-usr -o "lowerdir=$PKG/usr:/usr" /usr
mount -t overlay unit-etc -o "lowerdir=\${EXTRA_ETC:+$EXTRA_ETC:}$PKG/etc:/etc" /etc
mount -t tmpfs -o mode=0755 unit-run /run
mkdir -p "/run/$RUNTIME_NAME" && mount --bind "$RUNTIME_HOST" "/run/$RUNTIME_NAME"
mount -t tmpfs -o mode=0755 unit-cache /var/cache
mkdir -p "/var/cache/$CACHE_NAME" && mount --bind "$CACHE_HOST" "/var/cache/$CACHE_NAME"
for p in $HIDE /home /root; do
  if [ -d "$p" ]; then mount -t tmpfs -o ro,mode=0755 unit-hidden "$p"; fi
done
mount -t tmpfs -o mode=1777 unit-tmp /tmp
mount -t tmpfs -o mode=1777 unit-vartmp /var/tmp
mount --bind /proc/sys /proc/sys
findmnt -rno TARGET | sort -u | while read -r m; do
  case "$m" in
    /dev | /dev/* | /tmp | /var/tmp | "/run/$RUNTIME_NAME" | "/var/cache/$CACHE_NAME") continue ;;
    /proc/sys) ;;
    /proc | /proc/*) continue ;;
  esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
cd /
# LimitMEMLOCK=: as far as this host lets root raise it (a container may not).
ulimit -l "$MEMLOCK" 2>/dev/null || true
exec "$@"
`;

/** Creates the scratch directories and returns the sandbox; needs root. */
export async function createUnitSandbox(opts: UnitSandboxOptions): Promise<UnitSandbox> {
  const get = (key: string) => serviceValue(opts.unit, key);
  if (get("DynamicUser") !== "yes") throw new Error("only DynamicUser=yes units are emulated");
  const runtimeName = get("RuntimeDirectory") ?? "";
  const cacheName = get("CacheDirectory") ?? "";
  if (!runtimeName || !cacheName) throw new Error("the unit needs RuntimeDirectory= and CacheDirectory=");
  const uid = 61184 + Deno.pid % 4000;
  const scratch = await Deno.makeTempDir({ prefix: "flowd-unit-" });
  const runtimeDir = `${scratch}/run`, cacheDir = `${scratch}/cache`;
  await Deno.mkdir(runtimeDir, { mode: 0o755 });
  await Deno.mkdir(cacheDir, { mode: 0o750 });
  await Deno.chmod(runtimeDir, parseInt(get("RuntimeDirectoryMode") ?? "0755", 8));
  await Deno.chmod(cacheDir, parseInt(get("CacheDirectoryMode") ?? "0755", 8));
  await Deno.chown(runtimeDir, uid, uid);
  await Deno.chown(cacheDir, uid, uid);
  await Deno.chmod(scratch, 0o755);

  const bounding = capList(get("CapabilityBoundingSet"));
  const ambient = capList(get("AmbientCapabilities"));
  const setCaps = (caps: string[]) => ["-all", ...caps.map((c) => `+${c}`)].join(",");
  const nnp = get("NoNewPrivileges") === "yes" ? ["--no-new-privs"] : [];
  const environment = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
    "HOME=/",
    `RUNTIME_DIRECTORY=/run/${runtimeName}`,
    `CACHE_DIRECTORY=/var/cache/${cacheName}`,
    ...(opts.unit.get("Service")?.get("Environment") ?? []).flatMap((v) => v.split(/\s+/)),
  ];
  const memlock = get("LimitMEMLOCK") === "infinity" ? "unlimited" : "8192";

  return {
    runtimeDir,
    cacheDir,
    uid,
    command(execLine: string): string[] {
      if (/["']/.test(execLine)) throw new Error(`quoted Exec arguments are not supported: ${execLine}`);
      const elevated = /^-?!/.test(execLine);
      return build(elevated, execLine.replace(/^[!-]+/, "").split(/\s+/).filter(Boolean));
    },
    exec(argv: string[]): string[] {
      return build(false, argv);
    },
    async [Symbol.asyncDispose]() {
      await sh(["rm", "-rf", scratch], { check: false });
    },
  };

  /** The argv for one command: the mount setup, then the credentials, then a clean environment. */
  function build(elevated: boolean, argv: string[]): string[] {
    const credentials = elevated
      // "!": root, within the bounding set; root's capabilities after exec are the bounding set.
      ? ["setpriv", "--inh-caps=-all", `--bounding-set=${setCaps(bounding)}`, ...nnp]
      : [
        "setpriv",
        `--reuid=${uid}`,
        `--regid=${uid}`,
        "--clear-groups",
        `--inh-caps=${setCaps(ambient)}`,
        `--ambient-caps=${setCaps(ambient)}`,
        `--bounding-set=${setCaps(bounding)}`,
        ...nnp,
      ];
    const env = [
      `PKG=${opts.packageRoot}`,
      `EXTRA_ETC=${opts.extraEtc ?? ""}`,
      `RUNTIME_NAME=${runtimeName}`,
      `RUNTIME_HOST=${runtimeDir}`,
      `CACHE_NAME=${cacheName}`,
      `CACHE_HOST=${cacheDir}`,
      `HIDE=${(opts.hide ?? []).join(" ")}`,
      `MEMLOCK=${memlock}`,
    ];
    return [
      ...opts.prefix ?? [],
      "env",
      ...env,
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "bash",
      "-c",
      SETUP,
      "unit-sandbox",
      ...credentials,
      "env",
      "-i",
      ...environment,
      ...argv,
    ];
  }
}

/** Every system call a SystemCallFilter= allow list names, with its @groups expanded by systemd-analyze. */
export async function allowedSyscalls(filter: string): Promise<Set<string>> {
  const out = new Set<string>();
  const seen = new Set<string>();
  const expand = async (item: string): Promise<void> => {
    if (!item.startsWith("@")) return void out.add(item);
    if (seen.has(item)) return;
    seen.add(item);
    const listed = await sh(["systemd-analyze", "syscall-filter", item]);
    for (const raw of listed.stdout.split("\n")) {
      const line = raw.trim();
      if (line === "" || line.startsWith("#") || line === item) continue;
      await expand(line);
    }
  };
  for (const item of filter.split(/\s+/).filter(Boolean)) await expand(item);
  return out;
}

/** System call names and socket address families in an `strace -f -o` file. */
export function traceSummary(trace: string): { syscalls: Set<string>; families: Set<string> } {
  const syscalls = new Set<string>(), families = new Set<string>();
  for (const line of trace.split("\n")) {
    const call = /^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)/.exec(line);
    if (call) syscalls.add(call[1]!);
    const socket = /^\d+\s+socket\((AF_[A-Z0-9]+)/.exec(line);
    if (socket) families.add(socket[1]!);
  }
  return { syscalls, families };
}
