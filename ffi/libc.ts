/**
 * The few libc calls Deno does not offer: mkfifo, non-blocking open, flock, user and group lookup, and a
 * shared mapping of a file descriptor (a BPF array map's values, written without a syscall).
 * Only this module (and its siblings in ffi/) touches pointers.
 */

const symbols = {
  mkfifo: { parameters: ["buffer", "u32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // ioctl is variadic; FIONREAD's one argument is a pointer, passed in the first variadic register.
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  getpwnam: { parameters: ["buffer"], result: "pointer" },
  getgrnam: { parameters: ["buffer"], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
} as const;

// Loaded at import: a library first opened inside a test counts as a leak to Deno's test sanitizers.
const lib = Deno.dlopen("libc.so.6", symbols);

function libc(): Deno.DynamicLibrary<typeof symbols>["symbols"] {
  return lib.symbols;
}

// Linux x86-64 / aarch64 values.
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
const LOCK_EX = 2;
const LOCK_NB = 4;
export const EEXIST = 17;
export const ENXIO = 6;
export const EWOULDBLOCK = 11;
export const ENOENT = 2;

/** A failed libc call: the function, errno and its text. */
export class LibcError extends Error {
  constructor(readonly func: string, readonly errno: number, context: string) {
    super(`${context}: ${errnoText(errno)}`);
    this.name = "LibcError";
  }
}

const encoder = new TextEncoder();

function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(s + "\0");
  if (bytes.indexOf(0) !== bytes.length - 1) throw new TypeError(`${JSON.stringify(s)} contains a NUL byte`);
  return bytes;
}

/** errno of the last failed call; valid only right after a synchronous FFI call on this thread. */
function lastErrno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** The text of an errno value, e.g. "No such file or directory". */
export function errnoText(errno: number): string {
  const p = libc().strerror(errno);
  return p === null ? `errno ${errno}` : new Deno.UnsafePointerView(p).getCString();
}

/** Creates a FIFO with the given mode (the umask applies; set the final mode with chmod afterwards). */
export function mkfifo(path: string, mode: number): void {
  if (libc().mkfifo(cString(path), mode) !== 0) {
    const errno = lastErrno();
    throw new LibcError("mkfifo", errno, `cannot create the named pipe ${path}`);
  }
}

/** open(2); returns the fd, or throws `LibcError` carrying errno. */
export function openFd(path: string, flags: number, mode = 0): number {
  const fd = libc().open(cString(path), flags, mode);
  if (fd < 0) throw new LibcError("open", lastErrno(), `cannot open ${path}`);
  return fd;
}

/** close(2), ignoring errors (there is nothing useful to do about them here). */
export function closeFd(fd: number): void {
  libc().close(fd);
}

/** Writes all bytes to an fd (a short write is retried; EAGAIN is reported as an error). */
export function writeFd(fd: number, data: Uint8Array<ArrayBuffer>): void {
  let off = 0;
  while (off < data.length) {
    const n = Number(libc().write(fd, data.subarray(off), BigInt(data.length - off)));
    if (n < 0) throw new LibcError("write", lastErrno(), `cannot write to fd ${fd}`);
    off += n;
  }
}

const FIONREAD = 0x541b;

/** Bytes waiting to be read in a pipe or FIFO, through either of its ends (ioctl FIONREAD). */
export function pendingBytes(fd: number): number {
  const out = new Uint8Array(4);
  if (libc().ioctl(fd, BigInt(FIONREAD), out) !== 0) {
    throw new LibcError("ioctl", lastErrno(), `cannot query fd ${fd}`);
  }
  return new DataView(out.buffer).getInt32(0, true);
}

/** Truncates an open file. */
export function truncateFd(fd: number, length = 0): void {
  if (libc().ftruncate(fd, BigInt(length)) !== 0) {
    throw new LibcError("ftruncate", lastErrno(), `cannot truncate fd ${fd}`);
  }
}

/** Takes an exclusive advisory lock without waiting; false when another process holds it. */
export function tryLockExclusive(fd: number): boolean {
  if (libc().flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const errno = lastErrno();
  if (errno === EWOULDBLOCK) return false;
  throw new LibcError("flock", errno, `cannot lock fd ${fd}`);
}

// struct passwd { char *pw_name; char *pw_passwd; uid_t pw_uid; gid_t pw_gid; ... }
// struct group  { char *gr_name; char *gr_passwd; gid_t gr_gid; ... }
const ID_OFFSET = 16;

/** The uid of a user name, or undefined if there is no such user. */
export function uidOf(name: string): number | undefined {
  const p = libc().getpwnam(cString(name));
  return p === null ? undefined : new Deno.UnsafePointerView(p).getUint32(ID_OFFSET);
}

/** The gid of a group name, or undefined if there is no such group. */
export function gidOf(name: string): number | undefined {
  const p = libc().getgrnam(cString(name));
  return p === null ? undefined : new Deno.UnsafePointerView(p).getUint32(ID_OFFSET);
}

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/**
 * A read-write shared mapping of the first `length` bytes of `fd` (a BPF map created with BPF_F_MMAPABLE:
 * its values, as the kernel's programs see them). `buffer` aliases the mapping until `close()`; after that
 * it must not be touched (the pages are gone).
 */
export class SharedMapping {
  readonly buffer: ArrayBuffer;
  #ptr: Deno.PointerObject | null;

  private constructor(ptr: Deno.PointerObject, readonly length: number) {
    this.#ptr = ptr;
    this.buffer = Deno.UnsafePointerView.getArrayBuffer(ptr, length);
  }

  static open(fd: number, length: number): SharedMapping {
    const ptr = libc().mmap(null, BigInt(length), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0n);
    if (ptr === null || BigInt(Deno.UnsafePointer.value(ptr)) === MAP_FAILED) {
      throw new LibcError("mmap", lastErrno(), `cannot map fd ${fd}`);
    }
    return new SharedMapping(ptr, length);
  }

  close(): void {
    if (this.#ptr === null) return;
    libc().munmap(this.#ptr, BigInt(this.length));
    this.#ptr = null;
  }
}
