/**
 * Where the marker's BPF object comes from: the object embedded in the program (src/bpf_objects.ts),
 * or a user-supplied file (`programPath`). The loader only ever sees bytes.
 */
import { embeddedBpfObject } from "../../bpf_objects.ts";
import { programFile } from "../../bpf/object_bytes.ts";

/** The embedded marker object; `debug` selects the variant with bpf_printk traces. */
export function builtMarkerObject(debug: boolean): { bytes: Uint8Array; source: string } {
  const o = embeddedBpfObject("marker", debug ? "debug" : "release");
  return { bytes: o.bytes, source: o.label };
}

/** The bytes of a user-supplied object (`programPath`), with an error naming the path on failure. */
export function programFileObject(path: string): Promise<Uint8Array> {
  try {
    return Promise.resolve(programFile(path));
  } catch (err) {
    return Promise.reject(err);
  }
}
