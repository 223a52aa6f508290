/**
 * One datagram to an AF_UNIX socket named by a path or, when the name starts with "@", by an abstract
 * name (Linux): what sd_notify(3) does with $NOTIFY_SOCKET. And CLOCK_MONOTONIC, which systemd wants in
 * the MONOTONIC_USEC field of a reload notification.
 */
import { close, sendto, socket, strerror } from "./libc_socket.ts";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): 2 bytes of family and 108 of path. */
const SOCKADDR_UN_SIZE = 110;
const CLOCK_MONOTONIC = 1;

const lib = Deno.dlopen(
  "libc.so.6",
  {
    clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  } as const,
);

/** The sockaddr_un of a socket name; the address length counts only the bytes used (abstract names). */
function unixAddress(name: string): Uint8Array {
  const abstract = name.startsWith("@");
  const bytes = new TextEncoder().encode(abstract ? name.slice(1) : name);
  if (bytes.length + (abstract ? 1 : 0) >= SOCKADDR_UN_SIZE - 2) {
    throw new RangeError(`socket name of ${bytes.length} bytes is too long for a unix socket address`);
  }
  const used = 2 + (abstract ? 1 : 0) + bytes.length + (abstract ? 0 : 1);
  const addr = new Uint8Array(used);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, abstract ? 3 : 2); // an abstract name starts with a NUL byte
  return addr;
}

/** Sends `data` as one datagram to the unix socket `name`; throws with the errno text when it fails. */
export function sendUnixDatagram(name: string, data: Uint8Array): void {
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`cannot create a unix socket: ${strerror(-fd)}`);
  try {
    const sent = sendto(fd, data, MSG_NOSIGNAL, unixAddress(name));
    if (sent < 0) throw new Error(`cannot send to ${name}: ${strerror(-sent)}`);
  } finally {
    close(fd);
  }
}

/** CLOCK_MONOTONIC in microseconds. */
export function monotonicMicros(): bigint {
  const ts = new BigInt64Array(2);
  if (lib.symbols.clock_gettime(CLOCK_MONOTONIC, new Uint8Array(ts.buffer)) !== 0) {
    throw new Error("clock_gettime(CLOCK_MONOTONIC) failed");
  }
  return ts[0]! * 1_000_000n + ts[1]! / 1000n;
}
