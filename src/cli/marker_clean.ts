/**
 * `flowd-go marker clean`: removes the marker's hooks (and the clsact qdiscs it created) from every
 * interface, or from those named with --target-interface; runs as the unit's ExecStopPost, so a killed
 * daemon never leaves packets being marked. Exit 0 when nothing was left or all was removed.
 */
import { cleanMarkerHooks } from "../backends/marker/clean.ts";

/** What the command needs from the command line. */
export interface MarkerCleanArgs {
  targetInterfaces: string[];
  removeQdisc: boolean;
}

/** Cleans and prints one line per thing removed; returns the exit status. */
export async function markerCleanCommand(args: MarkerCleanArgs): Promise<number> {
  const report = await cleanMarkerHooks({
    interfaces: args.targetInterfaces,
    removeQdiscs: args.removeQdisc,
  });
  const lines = report.removed.map((a) => `removed ${a.removed} from ${a.interface}: ${a.detail}`);
  for (const f of report.failures) lines.push(`failed on ${f.interface}: ${f.error}`);
  if (lines.length === 0) lines.push("nothing to clean");
  await Deno.stdout.write(new TextEncoder().encode(lines.join("\n") + "\n"));
  return report.failures.length === 0 ? 0 : 1;
}
