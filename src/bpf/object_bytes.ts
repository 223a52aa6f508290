/**
 * Where the sock_ops BPF objects come from: the objects embedded in the program (src/bpf_objects.ts), or a
 * user-supplied file (`programPath`). The loaders only ever see bytes.
 */
import { embeddedBpfObject } from "../bpf_objects.ts";
import { readBoundedFileSync } from "../core/bounded_file.ts";

/** Largest `programPath` object read: ours are under 100 KB; a 16 MiB object would be a mistake, not code. */
export const MAX_BPF_OBJECT_BYTES = 16 << 20;

/** The bytes of a user-supplied BPF object (`programPath`): a regular file within the size bound. */
export function programFile(path: string): Uint8Array {
  return readBoundedFileSync(path, MAX_BPF_OBJECT_BYTES, "programPath");
}

/** The sock_ops objects this project builds. */
export type SockOpsObjectName = "skops" | "watcher";

/** The bytes of an embedded object; `debug` selects the variant with bpf_printk traces. */
export function builtSockOpsObject(name: SockOpsObjectName, debug: boolean): Uint8Array {
  return embeddedBpfObject(name, debug ? "debug" : "release").bytes;
}

/** The bytes of the configured `programPath`, or of the embedded object when it is "". */
export function sockOpsObject(
  name: SockOpsObjectName,
  o: { programPath: string; debugMode: boolean },
): Promise<{ bytes: Uint8Array; source: string }> {
  if (o.programPath === "") {
    const embedded = embeddedBpfObject(name, o.debugMode ? "debug" : "release");
    return Promise.resolve({ bytes: embedded.bytes, source: embedded.label });
  }
  try {
    return Promise.resolve({ bytes: programFile(o.programPath), source: o.programPath });
  } catch (err) {
    return Promise.reject(err);
  }
}
