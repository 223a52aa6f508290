/**
 * What `flowd-go doctor` checks: the host facts the configuration needs, each one a line with pass, warn
 * or fail and, when not pass, the fix. A check is `needed` when the configuration cannot work without it;
 * only needed checks that fail make the doctor fail. Facts are read from the kernel's own files
 * (/proc/self/status capabilities, /proc/self/mountinfo, /sys) and by doing the thing where that is cheap
 * (loading a program, binding a port).
 */
import {
  BPF_PROG_TYPE_SCHED_CLS,
  libbpfVersion,
  loadRawProgram,
  returnImmediateProgram,
} from "../../ffi/libbpf.ts";
import { closeFd } from "../../ffi/libc_net.ts";
import type { Config } from "../config/schema.ts";
import { errorMessage } from "../core/errors.ts";
import { cgroup2MountPoints, parseMountInfo, resolveCgroupPath } from "../bpf/cgroup.ts";
import { isPrivateAddress } from "../net/private_ranges.ts";
import { Rtnetlink } from "../net/rtnetlink.ts";
import { resolvePath } from "../wiring.ts";
import { dirname } from "node:path";
import { lookup } from "node:dns/promises";

export type Verdict = "pass" | "warn" | "fail";

export interface CheckResult {
  readonly name: string;
  readonly verdict: Verdict;
  /** What was found. */
  readonly detail: string;
  /** What to do, when not pass. */
  readonly fix?: string;
  /** The configuration needs it (a failed needed check fails the doctor). */
  readonly needed: boolean;
}

/** What the configuration uses, as far as the host is concerned. */
export interface Needs {
  readonly marker: boolean;
  /** sock_ops programs: the skops enricher, the iperf3 or the connections plugin. */
  readonly sockOps: boolean;
  readonly bpf: boolean;
}

export function needsOf(config: Config): Needs {
  const marker = config.backends.marker !== undefined;
  const sockOps = config.enrichers?.skops !== undefined || config.plugins.iperf3 !== undefined ||
    config.plugins.connections !== undefined;
  return { marker, sockOps, bpf: marker || sockOps };
}

const CAPS = { CAP_NET_ADMIN: 12, CAP_SYS_ADMIN: 21, CAP_PERFMON: 38, CAP_BPF: 39 } as const;
type CapName = keyof typeof CAPS;

/** The effective capability set of this process (CapEff in /proc/self/status). */
export function effectiveCapabilities(status: string): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

/** Kernel release as numbers, e.g. "6.1.0-18-amd64" → [6, 1]. */
export function kernelVersion(release: string): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

const atLeast = (v: [number, number], major: number, minor: number) =>
  v[0] > major || (v[0] === major && v[1] >= minor);

function result(
  name: string,
  verdict: Verdict,
  detail: string,
  needed: boolean,
  fix?: string,
): CheckResult {
  return { name, verdict, detail, needed, ...(fix && verdict !== "pass" ? { fix } : {}) };
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Every check but the marker probe (./marker_probe.ts), in the order they are printed. */
export async function hostChecks(config: Config, needs: Needs): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const release = Deno.osRelease();
  const version = kernelVersion(release);
  out.push(result(
    "kernel",
    atLeast(version, 5, 14) ? "pass" : "fail",
    `${release}${atLeast(version, 6, 6) ? " (TCX links)" : " (no TCX: the marker uses clsact filters)"}`,
    needs.bpf,
    "the marker and sock_ops programs need Linux 5.14 or later (EL9's kernel is the oldest supported)",
  ));

  // Capabilities, as the daemon would run (this process's effective set).
  const caps = effectiveCapabilities(await readText("/proc/self/status") ?? "");
  const wanted: CapName[] = [];
  if (needs.bpf) wanted.push("CAP_BPF", "CAP_NET_ADMIN");
  if (needs.sockOps) wanted.push("CAP_PERFMON", "CAP_SYS_ADMIN");
  const missing = wanted.filter((c) => (caps & (1n << BigInt(CAPS[c]))) === 0n);
  out.push(result(
    "capabilities",
    missing.length === 0 ? "pass" : "fail",
    wanted.length === 0
      ? "none needed by this configuration"
      : missing.length === 0
      ? `${wanted.join(", ")} effective`
      : `missing ${missing.join(", ")}`,
    wanted.length > 0,
    `run as root, or grant ${missing.join(" ")} (the unit's AmbientCapabilities= and CapabilityBoundingSet=)`,
  ));

  if (needs.bpf) {
    let detail: string, verdict: Verdict = "pass", fix: string | undefined;
    try {
      const fd = loadRawProgram(BPF_PROG_TYPE_SCHED_CLS, "flowd_doctor", returnImmediateProgram(0));
      closeFd(fd);
      detail = "a tc program loads";
    } catch (err) {
      verdict = "fail";
      detail = errorMessage(err);
      fix = /EPERM|Operation not permitted/.test(detail)
        ? "grant CAP_BPF and CAP_NET_ADMIN; check kernel.unprivileged_bpf_disabled and any seccomp filter"
        : "check the kernel has CONFIG_BPF_SYSCALL";
    }
    out.push(result("bpf syscall", verdict, detail, true, fix));

    let lib: string | undefined, libError = "";
    try {
      lib = libbpfVersion();
    } catch (err) {
      libError = errorMessage(err);
    }
    const [major, minor] = (lib ?? "0.0").split(".").map(Number);
    out.push(result(
      "libbpf",
      lib !== undefined && (major! > 1 || (major === 1 && minor! >= 1)) ? "pass" : "fail",
      lib !== undefined ? `libbpf ${lib}` : libError,
      true,
      "install libbpf 1.1 or later (Debian/Ubuntu: libbpf1; EL9: libbpf)",
    ));

    // memlock only limits BPF memory before Linux 5.11 (memory cgroups account for it since).
    const limits = await readText("/proc/self/limits") ?? "";
    const memlock = /^Max locked memory\s+(\S+)/m.exec(limits)?.[1] ?? "?";
    out.push(result(
      "memlock",
      atLeast(version, 5, 11) || memlock === "unlimited" ? "pass" : "warn",
      `${memlock}${atLeast(version, 5, 11) ? " (not used for BPF maps on this kernel)" : ""}`,
      false,
      "raise LimitMEMLOCK= (kernels before 5.11 charge BPF maps to it)",
    ));

    const btf = await exists("/sys/kernel/btf/vmlinux");
    out.push(result(
      "btf",
      btf ? "pass" : needs.sockOps ? "fail" : "warn",
      btf ? "/sys/kernel/btf/vmlinux" : "no /sys/kernel/btf/vmlinux",
      needs.sockOps,
      "the sock_ops programs read kernel structures through BTF: use a kernel built with CONFIG_DEBUG_INFO_BTF",
    ));
  }

  const mounts = parseMountInfo(await readText("/proc/self/mountinfo") ?? "");
  if (needs.bpf) {
    const bpffs = mounts.filter((m) => m.fsType === "bpf").map((m) => m.mountPoint);
    out.push(result(
      "bpffs",
      bpffs.length ? "pass" : "warn",
      bpffs.length ? bpffs.join(", ") : "not mounted",
      false,
      "mount -t bpf bpf /sys/fs/bpf (for bpftool inspection; flowd-go itself pins nothing)",
    ));
  }
  if (needs.sockOps) {
    const cgroup2 = cgroup2MountPoints(mounts);
    const configured = config.enrichers?.skops?.cgroupPath ?? config.plugins.iperf3?.cgroupPath ??
      config.plugins.connections?.cgroupPath ?? "/sys/fs/cgroup";
    let verdict: Verdict = cgroup2.length ? "pass" : "fail", detail: string;
    try {
      const choice = await resolveCgroupPath(configured);
      detail = `mounted at ${
        cgroup2.join(", ")
      }; the sock_ops programs attach to ${choice.path} (${choice.how})`;
    } catch (err) {
      verdict = "fail";
      detail = cgroup2.length
        ? `mounted at ${cgroup2.join(", ")}, but ${errorMessage(err)}`
        : "no cgroup2 mount";
    }
    out.push(result(
      "cgroup v2",
      verdict,
      detail,
      true,
      cgroup2.length
        ? "fix cgroupPath (enrichers.skops / plugins.iperf3 / plugins.connections) to a directory of the cgroup2 mount"
        : "mount cgroup2 (e.g. systemd.unified_cgroup_hierarchy=1), needed by the sock_ops programs",
    ));
  }

  if (needs.marker) out.push(...await interfaceChecks(config));
  out.push(...await pipeCheck(config));
  out.push(...portChecks(config));
  out.push(...await collectorCheck(config));
  return out;
}

async function interfaceChecks(config: Config): Promise<CheckResult[]> {
  const m = config.backends.marker!;
  using rt = Rtnetlink.open();
  const [links, addresses] = await Promise.all([rt.links(), rt.addresses("ipv6")]);
  const ipv6Of = (index: number) => addresses.filter((a) => a.ifindex === index);
  if (m.discoverInterfaces) {
    const picked = links.filter((l) =>
      l.up && !l.loopback && ipv6Of(l.index).some((a) => !isPrivateAddress(a.address))
    );
    return [result(
      "interfaces",
      picked.length ? "pass" : "fail",
      picked.length
        ? `discoverInterfaces would pick ${picked.map((l) => l.name).join(", ")}`
        : "discoverInterfaces finds no up interface with a public IPv6 address",
      true,
      "give the interfaces in backends.marker.targetInterfaces, or configure a public IPv6 address",
    )];
  }
  return m.targetInterfaces.map((name) => {
    const link = links.find((l) => l.name === name);
    if (!link) {
      return result(
        `interface ${name}`,
        "fail",
        "no such interface",
        true,
        "name existing interfaces in backends.marker.targetInterfaces (ip link lists them)",
      );
    }
    const v6 = ipv6Of(link.index).length > 0;
    return result(
      `interface ${name}`,
      v6 && link.up ? "pass" : "warn",
      `${link.up ? "up" : "down"}, ${v6 ? "has IPv6" : "no IPv6 address (nothing to mark)"}`,
      true,
      link.up ? "give it an IPv6 address" : `ip link set ${name} up`,
    );
  });
}

async function pipeCheck(config: Config): Promise<CheckResult[]> {
  const np = config.plugins.namedPipe;
  if (!np) return [];
  const dir = dirname(resolvePath(config, np.pipePath));
  const probe = `${dir}/.flowd-doctor-${Deno.pid}`;
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(probe, "");
    await Deno.remove(probe);
    return [result("pipe directory", "pass", `${dir} writable`, true)];
  } catch (err) {
    return [result(
      "pipe directory",
      "fail",
      `${dir}: ${errorMessage(err)}`,
      true,
      "make the directory writable for the daemon (the unit's RuntimeDirectory= or ReadWritePaths=)",
    )];
  }
}

function portChecks(config: Config): CheckResult[] {
  const wanted: { what: string; hostname: string; port: number }[] = [];
  const api = config.plugins.api;
  if (api) wanted.push({ what: "api port", hostname: api.bindAddress, port: api.bindPort });
  const prom = config.backends.prometheus;
  if (prom) {
    // One server per enricher flavour; port 0 turns one off.
    if (prom.netlinkPort) {
      wanted.push({ what: "prometheus port", hostname: prom.bindAddress, port: prom.netlinkPort });
    }
    if (prom.skopsPort) {
      wanted.push({ what: "prometheus port", hostname: prom.bindAddress, port: prom.skopsPort });
    }
  }
  const out: CheckResult[] = [];
  for (const w of wanted) {
    const where = `${w.hostname.includes(":") ? `[${w.hostname}]` : w.hostname}:${w.port}`;
    try {
      const listener = Deno.listen({ hostname: w.hostname, port: w.port });
      listener.close();
      out.push(result(w.what, "pass", `${where} free`, true));
    } catch (err) {
      const inUse = err instanceof Deno.errors.AddrInUse;
      out.push(result(
        w.what,
        inUse ? "warn" : "fail",
        `${where}: ${inUse ? "in use (by a running flowd-go?)" : errorMessage(err)}`,
        !inUse,
        inUse ? "stop what listens there, or change the port" : "fix the bind address",
      ));
    }
  }
  return out;
}

async function collectorCheck(config: Config): Promise<CheckResult[]> {
  const f = config.backends.firefly;
  if (!f?.sendToCollector) return [];
  const name = f.collectorAddress;
  try {
    const found = await lookup(name, { all: true });
    return [result("collector", "pass", `${name} → ${found.map((a) => a.address).join(", ")}`, true)];
  } catch (err) {
    return [result(
      "collector",
      "fail",
      `${name} does not resolve: ${errorMessage(err)}`,
      true,
      "fix backends.firefly.collectorAddress or the resolver",
    )];
  }
}
