/**
 * The few libc functions the marker needs: errno after a synchronous call, interface names and
 * indexes, closing descriptors handed out by libbpf, and formatting libbpf's printf-style log lines.
 *
 * Every call here is synchronous, so errno can be read right after it on the same thread.
 */

const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  if_nametoindex: { parameters: ["buffer"], result: "u32" },
  if_indextoname: { parameters: ["u32", "buffer"], result: "pointer" },
  close: { parameters: ["i32"], result: "i32" },
  vasprintf: { parameters: ["buffer", "pointer", "pointer"], result: "i32" },
  free: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

// Loaded at import: a library first opened inside a test would count as a leak to Deno's sanitizers.
const lib = Deno.dlopen("libc.so.6", SYMBOLS);

function libc(): typeof lib.symbols {
  return lib.symbols;
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of a string, for `char *` parameters. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** The calling thread's errno; only meaningful right after a failed synchronous call. */
export function lastErrno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32(0);
}

/** The index of a network interface, or undefined when there is none of that name. */
export function interfaceIndex(name: string): number | undefined {
  if (name.length === 0 || name.length > 15) return undefined;
  const index = libc().if_nametoindex(cString(name));
  return index === 0 ? undefined : index;
}

/** The name of the interface with this index, or undefined when it does not exist (any more). */
export function interfaceName(index: number): string | undefined {
  if (!Number.isInteger(index) || index <= 0) return undefined;
  const buf = new Uint8Array(16);
  const p = libc().if_indextoname(index, buf);
  if (p === null) return undefined;
  const end = buf.indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
}

/** Closes a file descriptor (BPF object, link or socket); errors are ignored, as close(2) advises. */
export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/**
 * Formats a printf-style format and its `va_list` (passed by pointer on x86-64 and, as a struct
 * pointer, on aarch64) with vasprintf, so any length fits and the list is consumed exactly once.
 */
export function formatVaList(fmt: Deno.PointerValue, ap: Deno.PointerValue): string {
  if (fmt === null) return "";
  const out = new BigUint64Array(1);
  const n = libc().vasprintf(new Uint8Array(out.buffer), fmt, ap);
  if (n < 0) return Deno.UnsafePointerView.getCString(fmt);
  const p = Deno.UnsafePointer.create(out[0]!);
  if (p === null) return "";
  try {
    return Deno.UnsafePointerView.getCString(p);
  } finally {
    libc().free(p);
  }
}
