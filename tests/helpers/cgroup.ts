/**
 * A cgroup v2 directory of its own for a test, so sock_ops programs attached to it see only the test's
 * processes (not other tests running on the host). Processes are started inside it with `spawn`; on
 * dispose they are killed, reaped and the directory removed, also when the test fails.
 */
import { cgroup2MountPoints, parseMountInfo } from "../../src/bpf/cgroup.ts";

/** A test cgroup with the processes started in it. */
export interface TestCgroup extends AsyncDisposable {
  readonly path: string;
  /** Starts a command inside the cgroup (its whole process tree stays in it). */
  spawn(argv: string[], opts?: { stdout?: "null" | "piped" }): Deno.ChildProcess;
  /** Waits for a process started here to exit; its status. */
  wait(child: Deno.ChildProcess): Promise<Deno.CommandStatus>;
}

/** The first cgroup2 mount point of this host (/sys/fs/cgroup or /sys/fs/cgroup/unified). */
export function cgroup2Root(): string {
  const root = cgroup2MountPoints(parseMountInfo(Deno.readTextFileSync("/proc/self/mountinfo")))[0];
  if (!root) throw new Error("this host has no cgroup2 filesystem mounted");
  return root;
}

let counter = 0;

/** Creates `<cgroup2 root>/flowd-test-<pid>-<n>`. */
export async function createTestCgroup(): Promise<TestCgroup> {
  const path = `${cgroup2Root()}/flowd-test-${Deno.pid}-${counter++}`;
  await Deno.mkdir(path);
  const children: { child: Deno.ChildProcess; piped: boolean }[] = [];
  const statuses = new Map<Deno.ChildProcess, Promise<Deno.CommandStatus>>();
  return {
    path,
    spawn(argv, opts = {}) {
      // The shell moves itself into the cgroup, then becomes the command.
      const child = new Deno.Command("sh", {
        args: ["-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', path, ...argv],
        stdin: "null",
        stdout: opts.stdout ?? "null",
        stderr: "null",
      }).spawn();
      children.push({ child, piped: opts.stdout === "piped" });
      statuses.set(child, child.status);
      return child;
    },
    wait(child) {
      return statuses.get(child) ?? child.status;
    },
    async [Symbol.asyncDispose]() {
      for (const { child, piped } of children) {
        try {
          child.kill("SIGKILL");
        } catch { /* already exited */ }
        await statuses.get(child);
        if (piped && !child.stdout.locked) await child.stdout.cancel().catch(() => {});
      }
      // A process that forked inside the cgroup may outlive the one we started: kill what is left.
      for (let i = 0; i < 50; i++) {
        const procs = (await Deno.readTextFile(`${path}/cgroup.procs`).catch(() => "")).trim();
        if (procs === "") break;
        for (const pid of procs.split("\n")) {
          try {
            Deno.kill(Number(pid), "SIGKILL");
          } catch { /* gone */ }
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      await Deno.remove(path).catch(() => {});
    },
  };
}

/** The ids of the programs `bpftool cgroup tree` lists, with their names and cgroup paths. */
export async function cgroupTree(): Promise<{ id: number; name: string; cgroup: string }[]> {
  const out = await new Deno.Command("bpftool", { args: ["-j", "cgroup", "tree"], stdout: "piped" }).output();
  if (!out.success) throw new Error("bpftool cgroup tree failed");
  const text = new TextDecoder().decode(out.stdout).trim();
  if (text === "") return [];
  const tree = JSON.parse(text) as { cgroup: string; programs: { id: number; name: string }[] }[];
  return tree.flatMap((c) => c.programs.map((p) => ({ id: p.id, name: p.name, cgroup: c.cgroup })));
}
