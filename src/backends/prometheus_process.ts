/**
 * Process metrics written here (prom-client's collectDefaultMetrics relies on Node internals that Deno
 * does not provide and fails at every scrape): CPU time, memory, open descriptors, start time, and the
 * daemon's version as `flowd_build_info`. Values are read when Prometheus scrapes.
 */
import { Counter, Gauge, type Registry } from "prom-client";

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** User plus system CPU seconds of this process, from /proc/self/stat. */
export function cpuSeconds(stat: string): number {
  // Fields after the command name (which may contain spaces) start with the state, field 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]), stime = Number(fields[12]);
  return (utime + stime) / USER_HZ;
}

function openFds(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n - 1; // the descriptor readDirSync itself holds
}

/** Registers the process metrics in the given registries. */
export function registerProcessMetrics(registries: Registry[], version: string): void {
  new Counter({
    name: "process_cpu_seconds_total",
    help: "User and system CPU time spent, in seconds",
    registers: registries,
    collect() {
      this.reset();
      this.inc(cpuSeconds(Deno.readTextFileSync("/proc/self/stat")));
    },
  });
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes",
    registers: registries,
    collect() {
      this.set(Deno.memoryUsage().rss);
    },
  });
  new Gauge({
    name: "process_heap_bytes",
    help: "JavaScript heap in use, in bytes",
    registers: registries,
    collect() {
      this.set(Deno.memoryUsage().heapUsed);
    },
  });
  new Gauge({
    name: "process_open_fds",
    help: "Open file descriptors",
    registers: registries,
    collect() {
      this.set(openFds());
    },
  });
  const started = new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since the Unix epoch, in seconds",
    registers: registries,
  });
  started.set(Math.floor(performance.timeOrigin / 1000));
  const info = new Gauge({
    name: "flowd_build_info",
    help: "The running flowd-go version, always 1",
    labelNames: ["version"],
    registers: registries,
  });
  info.set({ version }, 1);
}
