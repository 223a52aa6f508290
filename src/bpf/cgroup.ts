/**
 * Which cgroup v2 directory a sock_ops program is attached to. The configured path must lie in a
 * cgroup2 hierarchy; "" picks one automatically, and the conventional /sys/fs/cgroup is mapped to the
 * cgroup2 mount below it on hybrid hosts (where /sys/fs/cgroup is a tmpfs of v1 controllers and v2
 * sits at /sys/fs/cgroup/unified).
 */
import { ConfigError } from "../core/errors.ts";

/** One line of /proc/self/mountinfo, reduced to what matters here. */
export interface Mount {
  readonly mountPoint: string;
  readonly fsType: string;
}

/** The conventional cgroup location, and the original's default `cgroupPath`. */
export const DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup";

// mountinfo escapes space, tab, newline and backslash in paths as octal.
function unescapeMountPath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/self/mountinfo (mount point is field 5, the fs type follows the " - " separator). */
export function parseMountInfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const fields = line.slice(0, sep).split(" ");
    const fsType = line.slice(sep + 3).split(" ")[0];
    if (fields.length < 5 || !fsType) continue;
    mounts.push({ mountPoint: unescapeMountPath(fields[4]!), fsType });
  }
  return mounts;
}

/** The cgroup v2 path of a process from /proc/<pid>/cgroup ("0::/a/b"), or undefined without one. */
export function parseUnifiedCgroup(text: string): string | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith("0::")) return line.slice(3) || "/";
  }
  return undefined;
}

function normalise(path: string): string {
  const parts: string[] = [];
  for (const p of path.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") parts.pop();
    else parts.push(p);
  }
  return "/" + parts.join("/");
}

function isUnder(path: string, dir: string): boolean {
  return dir === "/" ? true : path === dir || path.startsWith(dir + "/");
}

/** The mount that holds `path`: the last-mounted one with the longest matching mount point. */
export function mountOf(path: string, mounts: readonly Mount[]): Mount | undefined {
  let best: Mount | undefined;
  for (const m of mounts) {
    if (!isUnder(path, m.mountPoint)) continue;
    if (!best || m.mountPoint.length >= best.mountPoint.length) best = m;
  }
  return best;
}

/** Mount points of cgroup2 filesystems, the conventional locations first. */
export function cgroup2MountPoints(mounts: readonly Mount[]): string[] {
  const points = [...new Set(mounts.filter((m) => m.fsType === "cgroup2").map((m) => m.mountPoint))];
  const rank = (p: string) => p === DEFAULT_CGROUP_ROOT ? 0 : p === `${DEFAULT_CGROUP_ROOT}/unified` ? 1 : 2;
  return points.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** What the choice is made from; read from /proc by `resolveCgroupPath`, given directly in tests. */
export interface CgroupFacts {
  readonly mounts: readonly Mount[];
  /** This process's cgroup v2 path ("/system.slice/flowd-go.service"), if it has one. */
  readonly ownCgroup: string | undefined;
}

/** The result: the directory to attach to, and a note on how it was found. */
export interface CgroupChoice {
  readonly path: string;
  readonly how: string;
}

/**
 * Chooses the cgroup directory for a configured `cgroupPath` (see the module comment). "" means the
 * parent of the daemon's own cgroup, as in the original (for a systemd service, its slice), or the root
 * when the daemon sits in the root. Throws `ConfigError` naming the cgroup2 mount when the path is not
 * in a cgroup2 hierarchy.
 */
export function chooseCgroup(configured: string, facts: CgroupFacts): CgroupChoice {
  const v2 = cgroup2MountPoints(facts.mounts);
  const mountList = v2.length ? v2.join(", ") : "nowhere (this host has no cgroup2 filesystem)";
  if (v2.length === 0) {
    throw new ConfigError(
      `cgroupPath ${
        JSON.stringify(configured)
      }: sock_ops programs need cgroup v2, which is mounted ${mountList}`,
    );
  }
  if (configured === "") {
    const root = v2[0]!;
    const own = facts.ownCgroup;
    if (own === undefined || own === "/") return { path: root, how: "the cgroup2 root (automatic)" };
    const parent = normalise(own).split("/").slice(0, -1).join("/");
    return {
      path: parent === "" ? root : `${root}${parent}`,
      how: `the parent of this process's cgroup ${own} (automatic)`,
    };
  }
  const path = normalise(configured);
  const holder = mountOf(path, facts.mounts);
  if (holder?.fsType === "cgroup2") return { path, how: "as configured" };
  if (path === DEFAULT_CGROUP_ROOT) {
    const below = v2.find((p) => isUnder(p, DEFAULT_CGROUP_ROOT));
    if (below !== undefined) {
      return { path: below, how: `${DEFAULT_CGROUP_ROOT} is not cgroup v2 on this host; its v2 part` };
    }
  }
  throw new ConfigError(
    `cgroupPath ${configured} is not in a cgroup v2 hierarchy (it is on ${
      holder?.fsType ?? "an unknown filesystem"
    }); cgroup v2 is mounted at ${mountList}`,
  );
}

/** Chooses the cgroup from this host's mounts and this process's cgroup, and checks the directory exists. */
export async function resolveCgroupPath(configured: string): Promise<CgroupChoice> {
  const [mountinfo, cgroup] = await Promise.all([
    Deno.readTextFile("/proc/self/mountinfo"),
    Deno.readTextFile("/proc/self/cgroup").catch(() => ""),
  ]);
  const choice = chooseCgroup(configured, {
    mounts: parseMountInfo(mountinfo),
    ownCgroup: parseUnifiedCgroup(cgroup),
  });
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(choice.path);
  } catch (err) {
    throw new ConfigError(
      `cgroup directory ${choice.path} (${choice.how}) cannot be used: ${
        err instanceof Error ? err.message : err
      }`,
    );
  }
  if (!info.isDirectory) throw new ConfigError(`cgroup path ${choice.path} is not a directory`);
  return choice;
}
