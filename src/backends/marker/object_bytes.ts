/**
 * Where the marker's BPF object comes from: the object embedded in the program (src/bpf_objects.ts),
 * or a user-supplied file (`programPath`). The loader only ever sees bytes.
 */
import { embeddedBpfObject } from "../../bpf_objects.ts";

/** The embedded marker object; `debug` selects the variant with bpf_printk traces. */
export function builtMarkerObject(debug: boolean): { bytes: Uint8Array; source: string } {
  const o = embeddedBpfObject("marker", debug ? "debug" : "release");
  return { bytes: o.bytes, source: o.label };
}

/** The bytes of a user-supplied object (`programPath`), with an error naming the path on failure. */
export async function programFileObject(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    throw new Error(`cannot read programPath ${path}: ${err instanceof Error ? err.message : err}`);
  }
}
