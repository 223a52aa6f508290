/**
 * libc socket, poll and network-namespace calls through FFI, for the netlink layer.
 *
 * Every call here is synchronous on the JS thread (so errno is read right after it, on the same
 * thread) except `pollAsync`, which waits on a pool thread and reports only its return value.
 * Failing calls return `-errno` instead of throwing, so callers can decide what an errno means.
 */

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  pollAsync: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

// Loaded once, when this module is first imported: loading lazily inside a call would make the first
// test that happens to use it "leak" the library in the eyes of Deno's test sanitizers.
const library = Deno.dlopen("libc.so.6", SYMBOLS);

function libc(): typeof library.symbols {
  return library.symbols;
}

/** The calling thread's errno; valid only right after a failed synchronous call. */
function errno(): number {
  const location = libc().__errno_location();
  if (location === null) return 0;
  return new Deno.UnsafePointerView(location).getInt32(0);
}

/** A return value, or `-errno` when the call returned -1. */
function checked(result: number | bigint): number {
  const n = Number(result);
  return n < 0 ? -errno() : n;
}

/** Socket-level constants the netlink layer needs (Linux, all architectures we target). */
export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_RCVBUF = 8;
export const SO_RCVBUFFORCE = 33;
export const SOL_NETLINK = 270;
export const MSG_PEEK = 0x2;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;
export const POLLIN = 0x1;
export const EINTR = 4;
export const EAGAIN = 11;

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const CLONE_NEWNET = 0x40000000;

/** socket(2): a file descriptor or -errno. */
export function socket(domain: number, type: number, protocol: number): number {
  return checked(libc().socket(domain, type, protocol));
}

/** bind(2) with a caller-built sockaddr: 0 or -errno. */
export function bind(fd: number, address: Uint8Array): number {
  return checked(libc().bind(fd, address, address.byteLength));
}

/** getsockname(2) into `address`: the address length or -errno. */
export function getsockname(fd: number, address: Uint8Array): number {
  const length = new Uint32Array([address.byteLength]);
  const rc = checked(libc().getsockname(fd, address, new Uint8Array(length.buffer)));
  return rc < 0 ? rc : length[0]!;
}

/** setsockopt(2) with a 32-bit integer value: 0 or -errno. */
export function setsockoptInt(fd: number, level: number, name: number, value: number): number {
  const v = new Int32Array([value]);
  return checked(libc().setsockopt(fd, level, name, new Uint8Array(v.buffer), 4));
}

/** sendto(2): bytes sent or -errno. */
export function sendto(fd: number, data: Uint8Array, flags: number, address: Uint8Array): number {
  return checked(libc().sendto(fd, data, BigInt(data.byteLength), flags, address, address.byteLength));
}

/** recv(2) into `buffer`: bytes received (the full datagram size with MSG_TRUNC) or -errno. */
export function recv(fd: number, buffer: Uint8Array, flags: number): number {
  return checked(libc().recv(fd, buffer, BigInt(buffer.byteLength), flags));
}

/** close(2): 0 or -errno. */
export function close(fd: number): number {
  return checked(libc().close(fd));
}

/** Waits for `fd` to become readable without blocking the event loop: true if readable, false on timeout. */
export async function waitReadable(fd: number, timeoutMs: number): Promise<boolean> {
  const pollfd = new Uint8Array(8);
  const view = new DataView(pollfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, POLLIN, true);
  // `pollfd` stays referenced by this frame until the pool thread is done with it.
  const rc = await libc().pollAsync(pollfd, 1n, timeoutMs);
  // errno is lost on a pool thread; a failed poll (EINTR at most, for a valid fd) counts as "not yet".
  return rc > 0 && (view.getInt16(6, true) & POLLIN) !== 0;
}

/** strerror(3): the C library's text for an errno value. */
export function strerror(errnoValue: number): string {
  const text = libc().strerror(errnoValue);
  return text === null ? `errno ${errnoValue}` : new Deno.UnsafePointerView(text).getCString();
}

function openReadOnly(path: string): number {
  const cPath = new TextEncoder().encode(`${path}\0`);
  return checked(libc().open(cPath, O_RDONLY | O_CLOEXEC));
}

/**
 * Runs `create` with the JS thread switched into the network namespace at `netnsPath`, then switches back.
 * Sockets keep the namespace they were created in, so this opens netlink sockets into other namespaces.
 * Nothing else can run on this thread in between, since the whole switch is synchronous. Needs CAP_SYS_ADMIN.
 */
export function inNetworkNamespace<T>(netnsPath: string, create: () => T): T {
  const original = openReadOnly("/proc/thread-self/ns/net");
  if (original < 0) throw new Error(`cannot open this thread's network namespace: ${strerror(-original)}`);
  try {
    const target = openReadOnly(netnsPath);
    if (target < 0) throw new Error(`cannot open network namespace ${netnsPath}: ${strerror(-target)}`);
    const entered = checked(libc().setns(target, CLONE_NEWNET));
    close(target);
    if (entered < 0) throw new Error(`cannot enter network namespace ${netnsPath}: ${strerror(-entered)}`);
    let outcome: { value: T } | { error: unknown };
    try {
      outcome = { value: create() };
    } catch (error) {
      outcome = { error };
    }
    const back = checked(libc().setns(original, CLONE_NEWNET));
    // Staying in the wrong namespace would silently misdirect every later socket of the daemon.
    if (back < 0) throw new Error(`cannot return to the original network namespace: ${strerror(-back)}`);
    if ("error" in outcome) throw outcome.error;
    return outcome.value;
  } finally {
    close(original);
  }
}
