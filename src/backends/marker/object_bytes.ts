/**
 * Where the marker's BPF object comes from: the object built by scripts/build_bpf.sh next to the
 * sources, or a user-supplied file (`programPath`). One function, so packaging can switch to bytes
 * embedded in the bundle without touching the loader.
 */

/** The built object files, relative to this module. */
const BUILT_OBJECTS = {
  release: new URL("../../../bpf/build/marker.bpf.o", import.meta.url),
  debug: new URL("../../../bpf/build/marker-dbg.bpf.o", import.meta.url),
} as const;

/** The bytes of the built marker object; `debug` selects the variant with bpf_printk traces. */
export async function builtMarkerObject(debug: boolean): Promise<Uint8Array> {
  const url = debug ? BUILT_OBJECTS.debug : BUILT_OBJECTS.release;
  try {
    return await Deno.readFile(url);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(
        `the marker BPF object ${url.pathname} is missing: build it with scripts/build_bpf.sh (needs clang)`,
      );
    }
    throw err;
  }
}

/** The bytes of a user-supplied object (`programPath`), with an error naming the path on failure. */
export async function programFileObject(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    throw new Error(`cannot read programPath ${path}: ${err instanceof Error ? err.message : err}`);
  }
}
