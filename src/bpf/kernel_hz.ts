/**
 * The kernel's timer frequency (CONFIG_HZ), which turns the jiffies the skops program reports into time.
 * Read from /boot/config-<release> or /proc/config.gz, as the original does. Where neither exists (minimal
 * installs, containers, VMs booted with a bare kernel) it is measured: the jiffies counter (read through
 * BPF_PROG_TEST_RUN) against the monotonic clock over a short wait, snapped to the values kernels are built
 * with. Assuming 1000 there made Debian's cloud kernels (HZ 250) report rto and ato four times too small.
 */
import { JiffiesClock } from "./jiffies.ts";

/** CONFIG_HZ from the text of a kernel configuration, or undefined when it is not there. */
export function parseConfigHz(config: string): number | undefined {
  const m = /^CONFIG_HZ=(\d+)\s*$/m.exec(config);
  const hz = m ? Number(m[1]) : NaN;
  return Number.isInteger(hz) && hz > 0 ? hz : undefined;
}

async function gunzipText(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

/** Where the value came from, for the log. */
export interface KernelHz {
  readonly hz: number;
  readonly source: string;
}

/** The default when the kernel configuration cannot be read. */
export const FALLBACK_HZ = 1000;

/** The frequencies Linux can be configured with (kernel/Kconfig.hz). */
export const CONFIG_HZ_CHOICES = [100, 250, 300, 1000] as const;

/**
 * The configured frequency closest to `ticks` jiffies seen in `ms` milliseconds, or undefined when none is
 * within 12 % (the choices closest together, 250 and 300, are 20 % apart).
 */
export function snapHz(ticks: number, ms: number): number | undefined {
  if (!(ms > 0) || !(ticks > 0)) return undefined;
  const rate = ticks * 1000 / ms;
  let best: number = CONFIG_HZ_CHOICES[0];
  for (const hz of CONFIG_HZ_CHOICES) if (Math.abs(rate - hz) < Math.abs(rate - best)) best = hz;
  return Math.abs(rate - best) / best <= 0.12 ? best : undefined;
}

/**
 * Measures HZ by counting jiffies over consecutive windows of `windowMs`; needs BPF (CAP_BPF). One window
 * can be thrown off by a stalled timer or a slow read (a VM under emulation gave 300 for a 250 Hz kernel),
 * so the answer is the first value two windows in a row agree on; undefined when `maxWindows` never agree.
 */
export async function measureHz(windowMs = 100, maxWindows = 8): Promise<number | undefined> {
  using clock = new JiffiesClock();
  clock.now(); // loads its programs, so that the first window does not time the load
  let previous: number | undefined;
  let j0 = clock.now();
  let t0 = performance.now();
  for (let window = 0; window < maxWindows; window++) {
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    const j1 = clock.now();
    const t1 = performance.now();
    const hz = snapHz(Number(j1 - j0), t1 - t0);
    if (hz !== undefined && hz === previous) return hz;
    previous = hz;
    [j0, t0] = [j1, t1];
  }
  return undefined;
}

/** Reads CONFIG_HZ of the running kernel. */
export async function kernelHz(): Promise<KernelHz> {
  const boot = `/boot/config-${Deno.osRelease()}`;
  try {
    const hz = parseConfigHz(await Deno.readTextFile(boot));
    if (hz) return { hz, source: boot };
  } catch { /* not there: try /proc */ }
  try {
    const hz = parseConfigHz(await gunzipText(await Deno.readFile("/proc/config.gz")));
    if (hz) return { hz, source: "/proc/config.gz" };
  } catch { /* not there either */ }
  try {
    const hz = await measureHz();
    if (hz) return { hz, source: "measured (jiffies against the clock; no kernel configuration found)" };
  } catch { /* no BPF here */ }
  return {
    hz: FALLBACK_HZ,
    source: "fallback (no kernel configuration found, and it could not be measured)",
  };
}
