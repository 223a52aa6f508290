/**
 * The kernel's timer frequency (CONFIG_HZ), which turns the jiffies the skops program reports into time.
 * Read from /boot/config-<release> or /proc/config.gz, as the original does; 1000 when neither says.
 */

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
  return { hz: FALLBACK_HZ, source: "fallback (no kernel configuration found)" };
}
