/**
 * The compiled BPF objects, embedded in the program: every bpf/<name>.bpf.c in its release and debug
 * (-dbg, bpf_printk traces) build. Imported as bytes, so a bundle or compiled binary carries them and
 * loads them with bpf_object__open_mem; nothing is read from the source tree at run time.
 *
 * scripts/build_bpf.sh must have run before any deno command (check, test, run, bundle) sees this
 * module. Adding a bpf/*.bpf.c means adding its two imports and its entry below; a unit test fails
 * until that is done. Benchmark programs (bpf/bench_*.bpf.c) are not part of the daemon and stay out.
 */
import markerRelease from "../bpf/build/marker.bpf.o" with { type: "bytes" };
import markerDebug from "../bpf/build/marker-dbg.bpf.o" with { type: "bytes" };
import skopsRelease from "../bpf/build/skops.bpf.o" with { type: "bytes" };
import skopsDebug from "../bpf/build/skops-dbg.bpf.o" with { type: "bytes" };
import watcherRelease from "../bpf/build/watcher.bpf.o" with { type: "bytes" };
import watcherDebug from "../bpf/build/watcher-dbg.bpf.o" with { type: "bytes" };

/** The daemon's programs, by file name (bpf/<name>.bpf.c): marker, skops enricher, iperf3 watcher. */
export const BPF_PROGRAM_NAMES = ["marker", "skops", "watcher"] as const;

/** A program name: the file bpf/<name>.bpf.c. */
export type BpfProgramName = typeof BPF_PROGRAM_NAMES[number];

/** Which build of an object: release, or debug (-DDEBUG, bpf_printk traces). */
export type BpfVariant = "release" | "debug";

const OBJECTS: Record<BpfProgramName, Record<BpfVariant, Uint8Array>> = {
  marker: { release: markerRelease, debug: markerDebug },
  skops: { release: skopsRelease, debug: skopsDebug },
  watcher: { release: watcherRelease, debug: watcherDebug },
};

/** An embedded object file; `label` names it in messages (its file name under bpf/build/). */
export interface EmbeddedBpfObject {
  readonly bytes: Uint8Array;
  readonly label: string;
}

/**
 * The embedded object of a program. The bytes are shared: callers must not modify them (libbpf's
 * open_mem only reads its buffer).
 */
export function embeddedBpfObject(name: BpfProgramName, variant: BpfVariant): EmbeddedBpfObject {
  return {
    bytes: OBJECTS[name][variant],
    label: `embedded ${name}${variant === "debug" ? "-dbg" : ""}.bpf.o`,
  };
}
