/**
 * A Debian 12 root with systemd, made with debootstrap from the mirror this machine's apt uses, cached
 * under the toolchain directory, and booted with systemd-nspawn on a throw-away overlay (every boot starts
 * from the cached root). Commands run inside with nsenter. The machine has a private network: nothing it
 * does leaves it, except through links a test adds itself.
 */
import { sh } from "./netns.ts";

/** Packages in the root: systemd to boot, rpm to install our package, tools the checks use. */
const PACKAGES = [
  "systemd",
  "systemd-sysv",
  "dbus",
  "rpm",
  "iproute2",
  "libbpf1",
  "python3",
  "procps",
  "curl",
];

/** A booted machine. */
export interface BootedMachine extends AsyncDisposable {
  /** PID (on the host) of the machine's systemd, PID 1 inside. */
  readonly leader: number;
  /** The machine's root as the host sees it (the overlay). */
  readonly root: string;
  /** Runs a command inside the machine. */
  run(argv: string[], opts?: { check?: boolean }): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Runs a shell command line inside the machine. */
  shell(
    script: string,
    opts?: { check?: boolean },
  ): Promise<{ code: number; stdout: string; stderr: string }>;
}

/** The apt mirror of this machine (deb822 sources or sources.list), for debootstrap. */
export async function aptMirror(): Promise<string> {
  const texts: string[] = [];
  for (const f of ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]) {
    texts.push(await Deno.readTextFile(f).catch(() => ""));
  }
  const text = texts.join("\n");
  const deb822 = /^URIs:\s*(\S+\/debian)\/?\s*$/m.exec(text)?.[1];
  const classic = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\/?\s+bookworm\s/m.exec(text)?.[1];
  const mirror = deb822 ?? classic;
  if (!mirror) throw new Error("cannot find the Debian mirror in /etc/apt (sources.list.d/debian.sources)");
  return mirror;
}

/** The cached root, made on first use (about 3 minutes); returns its path and whether it was just made. */
export async function debianRoot(): Promise<{ path: string; made: boolean }> {
  const toolchain = Deno.env.get("FLOWD_GO_TOOLCHAIN") ??
    `${Deno.env.get("HOME") ?? "/root"}/.cache/flowd-go-toolchain`;
  const mirror = await aptMirror();
  const key = await digest(`bookworm minbase ${mirror} ${PACKAGES.join(",")}`);
  const path = `${toolchain}/systemd-root-bookworm-${key}`;
  try {
    if ((await Deno.stat(`${path}/usr/lib/systemd/systemd`)).isFile) return { path, made: false };
  } catch { /* not made yet */ }
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.mkdir(toolchain, { recursive: true });
  try {
    await sh([
      "debootstrap",
      "--variant=minbase",
      `--include=${PACKAGES.join(",")}`,
      "bookworm",
      tmp,
      mirror,
    ]);
    await Deno.rename(tmp, path);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return { path, made: true };
}

async function digest(text: string): Promise<string> {
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(hash)].slice(0, 8).map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Boots the root on an overlay in `scratch`; dispose powers it off and removes everything. */
export async function bootDebian(lower: string, scratch: string): Promise<BootedMachine> {
  const upper = `${scratch}/upper`, work = `${scratch}/work`, root = `${scratch}/merged`;
  for (const d of [upper, work, root]) await Deno.mkdir(d, { recursive: true });
  await sh([
    "mount",
    "-t",
    "overlay",
    "flowd-go-boot",
    "-o",
    `lowerdir=${lower},upperdir=${upper},workdir=${work}`,
    root,
  ]);
  const nspawn = new Deno.Command("systemd-nspawn", {
    args: [
      "-D",
      root,
      "-b",
      "--private-network",
      "--capability=all",
      "--system-call-filter=bpf",
      "--register=no",
      "--keep-unit",
      `--machine=flowd-go-test-${Deno.pid}`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const teardown = async () => {
    try {
      nspawn.kill("SIGTERM"); // systemd-nspawn asks the machine to power off
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        nspawn.kill("SIGKILL");
      } catch { /* gone */ }
    }, 15_000);
    await nspawn.status;
    clearTimeout(timer);
    await sh(["umount", root], { check: false });
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  };
  try {
    const leader = await findLeader(nspawn.pid);
    const run = async (argv: string[], opts: { check?: boolean } = {}) =>
      await sh(["nsenter", "-t", String(leader), "-a", ...argv], { check: opts.check ?? true });
    // Until its systemd listens, systemctl cannot even ask; then --wait waits for the boot to finish.
    let state = { code: 1, stdout: "", stderr: "" };
    for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
      state = await run(["systemctl", "is-system-running", "--wait"], { check: false });
      if (/running|degraded/.test(state.stdout)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    if (!/running|degraded/.test(state.stdout)) {
      throw new Error(`the machine did not boot: ${state.stdout}${state.stderr}`);
    }
    return {
      leader,
      root,
      run,
      shell: (script, opts) => run(["sh", "-c", script], opts),
      [Symbol.asyncDispose]: teardown,
    };
  } catch (err) {
    await teardown();
    throw err;
  }
}

/** The machine's PID 1: the systemd that nspawn started (a child of nspawn). */
async function findLeader(nspawnPid: number): Promise<number> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const children =
      (await sh(["ps", "--ppid", String(nspawnPid), "-o", "pid=,comm="], { check: false })).stdout;
    const m = /^\s*(\d+)\s+systemd\s*$/m.exec(children);
    if (m) return Number(m[1]);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("systemd-nspawn started no systemd");
}
