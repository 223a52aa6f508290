/**
 * The few libc functions the BPF bindings need: errno after a synchronous call, closing descriptors
 * handed out by libbpf, and formatting libbpf's printf-style log lines.
 *
 * Every call here is synchronous, so errno can be read right after it on the same thread.
 */

const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
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
