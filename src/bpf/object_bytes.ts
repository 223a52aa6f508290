/**
 * Where the sock_ops BPF objects come from: the objects scripts/build_bpf.sh builds next to the sources,
 * or a user-supplied file (`programPath`). One place, so packaging can switch to embedded bytes.
 */

/** The sock_ops objects this project builds. */
export type SockOpsObjectName = "skops" | "watcher";

function builtUrl(name: SockOpsObjectName, debug: boolean): URL {
  return new URL(`../../bpf/build/${name}${debug ? "-dbg" : ""}.bpf.o`, import.meta.url);
}

/** The bytes of a built object; `debug` selects the variant with bpf_printk traces. */
export async function builtSockOpsObject(name: SockOpsObjectName, debug: boolean): Promise<Uint8Array> {
  const url = builtUrl(name, debug);
  try {
    return await Deno.readFile(url);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(
        `the ${name} BPF object ${url.pathname} is missing: build it with scripts/build_bpf.sh (needs clang)`,
      );
    }
    throw err;
  }
}

/** The bytes of the configured `programPath`, or of the built object when it is "". */
export async function sockOpsObject(
  name: SockOpsObjectName,
  o: { programPath: string; debugMode: boolean },
): Promise<{ bytes: Uint8Array; source: string }> {
  if (o.programPath === "") {
    return {
      bytes: await builtSockOpsObject(name, o.debugMode),
      source: builtUrl(name, o.debugMode).pathname,
    };
  }
  try {
    return { bytes: await Deno.readFile(o.programPath), source: o.programPath };
  } catch (err) {
    throw new Error(`cannot read programPath ${o.programPath}: ${err instanceof Error ? err.message : err}`);
  }
}
