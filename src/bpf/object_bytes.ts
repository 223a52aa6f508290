/**
 * Where the sock_ops BPF objects come from: the objects embedded in the program (src/bpf_objects.ts), or a
 * user-supplied file (`programPath`). The loaders only ever see bytes.
 */
import { embeddedBpfObject } from "../bpf_objects.ts";

/** The sock_ops objects this project builds. */
export type SockOpsObjectName = "skops" | "watcher";

/** The bytes of an embedded object; `debug` selects the variant with bpf_printk traces. */
export function builtSockOpsObject(name: SockOpsObjectName, debug: boolean): Uint8Array {
  return embeddedBpfObject(name, debug ? "debug" : "release").bytes;
}

/** The bytes of the configured `programPath`, or of the embedded object when it is "". */
export async function sockOpsObject(
  name: SockOpsObjectName,
  o: { programPath: string; debugMode: boolean },
): Promise<{ bytes: Uint8Array; source: string }> {
  if (o.programPath === "") {
    const embedded = embeddedBpfObject(name, o.debugMode ? "debug" : "release");
    return { bytes: embedded.bytes, source: embedded.label };
  }
  try {
    return { bytes: await Deno.readFile(o.programPath), source: o.programPath };
  } catch (err) {
    throw new Error(`cannot read programPath ${o.programPath}: ${err instanceof Error ? err.message : err}`);
  }
}
