/** Small helpers shared by the benchmarks: flags, medians, ranges. */

/** `--name value` flags with defaults; a bare `--name` reads as "true". */
export function parseFlags<T extends Record<string, string>>(defaults: T): T {
  const out: Record<string, string> = { ...defaults };
  const args = Deno.args;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("--")) continue;
    const name = a.slice(2);
    const next = args[i + 1];
    if (next === undefined || next.startsWith("--")) out[name] = "true";
    else out[name] = args[++i]!;
  }
  return out as T;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** "min-max" rounded, for a table cell. */
export function range(xs: number[]): string {
  return `${Math.round(Math.min(...xs))}-${Math.round(Math.max(...xs))}`;
}

/** One round of a throughput benchmark. */
export interface RoundStats {
  perSecond: number;
  cpuUsPerOp: number;
  peakRssMb: number;
  lost: number;
}

/**
 * The V8 flags the built daemon runs with (scripts/v8-flags), as `deno run` arguments, so that a bench
 * that starts `src/main.ts` measures the runtime that ships. `--source-v8` on a bench's command line
 * drops them (V8's own defaults), to compare the two.
 */
export function shippedV8Flags(): string[] {
  if (Deno.args.includes("--source-v8")) return [];
  const text = Deno.readTextFileSync(new URL("../scripts/v8-flags", import.meta.url));
  const flags = text.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
  return flags.length > 0 ? [`--v8-flags=${flags.join(",")}`] : [];
}
