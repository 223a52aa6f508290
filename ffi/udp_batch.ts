/**
 * A UDP receiver that takes datagrams in batches: a libc socket (nonblocking), readiness waited for with
 * `poll` on a pool thread (so the event loop stays free), then `recvmmsg` with MSG_DONTWAIT on the JS
 * thread, up to `batch` datagrams per call into buffers allocated once. node:dgram costs an event-loop turn,
 * a buffer and a callback per datagram; here a burst of 64 costs one wake-up and one system call.
 * `UdpSender` is the other direction: nonblocking sendmmsg whose outcome is known when the call returns.
 *
 * Only this module knows the struct layouts (Linux x86-64 / aarch64 LP64, checked with offsetof):
 *   struct msghdr   56 bytes: msg_name@0 msg_namelen@8 msg_iov@16 msg_iovlen@24 msg_control@32
 *                             msg_controllen@40 msg_flags@48
 *   struct mmsghdr  64 bytes: msg_hdr@0 msg_len@56
 *   struct iovec    16 bytes: iov_base@0 iov_len@8
 *   struct sockaddr_in  16 bytes: family@0 port@2 (big-endian) addr@4
 *   struct sockaddr_in6 28 bytes: family@0 port@2 flowinfo@4 addr@8 scope_id@24
 *   struct pollfd    8 bytes: fd@0 events@4 revents@6
 * It imports nothing from src/: the caller hands in a function for log lines.
 */

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "pointer"], result: "i32" },
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  inet_pton: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  inet_ntop: { parameters: ["i32", "buffer", "buffer", "u32"], result: "pointer" },
  if_nametoindex: { parameters: ["buffer"], result: "u32" },
  pollAsync: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

// Loaded at import: a library first opened inside a test counts as a leak to Deno's test sanitizers.
const library = Deno.dlopen("libc.so.6", SYMBOLS);
const libc = library.symbols;

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const MSG_TRUNC = 0x20;
const MSG_DONTWAIT = 0x40;
const POLLIN = 0x1;
const POLLOUT = 0x4;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const EAGAIN = 11;
const MSG_NOSIGNAL = 0x4000;
const EINTR = 4;

const MSGHDR_SIZE = 56;
/** Where recvmmsg writes a datagram's length: msg_len, right after the msghdr. */
const MSG_LEN_OFFSET = MSGHDR_SIZE;
const MMSGHDR_SIZE = 64;
const IOVEC_SIZE = 16;
/** sizeof(struct sockaddr_in6), the larger of the two families; each name slot is padded to 32. */
const SOCKADDR_SIZE = 28;
const NAME_STRIDE = 32;

/** Datagrams per recvmmsg by default. */
export const DEFAULT_BATCH = 64;
/** recvmmsg calls per wake-up at most, so one busy socket cannot hold the event loop for long. */
const CALLS_PER_WAKEUP = 16;
/** The receive buffers together stay under this, whatever the slot size (batches shrink for big slots). */
const MAX_BUFFER_BYTES = 4 * 1024 * 1024;
/** Source addresses whose text is remembered (then the memory starts over). */
const MAX_CACHED_SOURCES = 1024;

/** A failed libc call: the function and errno. */
export class UdpSocketError extends Error {
  constructor(readonly func: string, readonly errno: number, context: string) {
    super(`${context}: ${errnoText(errno)}`);
    this.name = "UdpSocketError";
  }
}

/** The C library's text for an errno value. */
export function errnoText(errno: number): string {
  const p = libc.strerror(errno);
  return p === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(p);
}

/** errno of the last failed synchronous call on this thread. */
function lastErrno(): number {
  const p = libc.__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32(0);
}

/** The address of byte `offset` of a buffer (a number, for writing into structs). */
function addressOf(buffer: Uint8Array<ArrayBuffer>, offset = 0): bigint {
  const p = Deno.UnsafePointer.of(buffer);
  if (p === null) throw new Error("a receive buffer has no address");
  return BigInt(Deno.UnsafePointer.value(p)) + BigInt(offset);
}

/** A socket address for bind: IPv4 or IPv6 literal (an IPv6 one may carry a %zone), and port. */
function socketAddress(address: string, port: number): { family: number; bytes: Uint8Array<ArrayBuffer> } {
  const encoder = new TextEncoder();
  const [host, zone] = address.split("%", 2) as [string, string | undefined];
  const cHost = encoder.encode(host + "\0");
  const v4 = new Uint8Array(4);
  if (zone === undefined && libc.inet_pton(AF_INET, cHost, v4) === 1) {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, AF_INET, true);
    view.setUint16(2, port, false);
    bytes.set(v4, 4);
    return { family: AF_INET, bytes };
  }
  const v6 = new Uint8Array(16);
  if (libc.inet_pton(AF_INET6, cHost, v6) !== 1) {
    throw new TypeError(`"${address}" is not an IPv4 or IPv6 address`);
  }
  const bytes = new Uint8Array(SOCKADDR_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, AF_INET6, true);
  view.setUint16(2, port, false);
  bytes.set(v6, 8);
  if (zone !== undefined) {
    const index = /^\d+$/.test(zone) ? Number(zone) : libc.if_nametoindex(encoder.encode(zone + "\0"));
    if (index === 0) throw new TypeError(`"${zone}" in "${address}" is not a network interface`);
    view.setUint32(24, index, true);
  }
  return { family: AF_INET6, bytes };
}

/** Settings of a `UdpBatchReceiver`. */
export interface UdpBatchReceiverOptions {
  /** IPv4 or IPv6 literal to bind; `::` with `v6Only: false` also takes IPv4 (as ::ffff:a.b.c.d senders). */
  address: string;
  /** UDP port; 0 picks a free one. */
  port: number;
  /** IPV6_V6ONLY for IPv6 addresses (default true). */
  v6Only?: boolean;
  /** Bytes kept of each datagram; a longer one is reported with its real length and `truncated` set. */
  slotSize: number;
  /** Datagrams per recvmmsg call (default 64; fewer when slots are large). */
  batch?: number;
  /** SO_RCVBUF in bytes (the kernel doubles it and caps it at rmem_max); default: the kernel's default. */
  receiveBufferBytes?: number;
  /** Where failures of recvmmsg or of the handler are reported (rate-limiting is the caller's business). */
  onError?: (message: string, err: unknown) => void;
}

/**
 * Called once per datagram, synchronously, on the JS thread. `data` views a buffer that is reused right
 * after the call returns: copy what must be kept. `length` is the datagram's real size: when it exceeds
 * `data.length` the datagram was truncated to the slot size. `address` is the sender's address as text
 * (what node:dgram reports: `::ffff:a.b.c.d` for IPv4 senders on a dual-stack socket).
 */
export type DatagramHandler = (data: Uint8Array, length: number, address: string, port: number) => void;

/** Counters of a receiver. */
export interface UdpBatchReceiverStats {
  /** Datagrams handed to the handler. */
  datagrams: number;
  /** recvmmsg calls that returned at least one datagram. */
  batches: number;
  /** Datagrams longer than the slot size. */
  truncated: number;
  /** Failed recvmmsg calls (other than "nothing waiting") and handler exceptions. */
  errors: number;
}

/** A bound UDP socket read with recvmmsg in batches; `start` it with a handler, `close` it when done. */
export class UdpBatchReceiver {
  readonly stats: UdpBatchReceiverStats = { datagrams: 0, batches: 0, truncated: 0, errors: 0 };
  readonly #fd: number;
  readonly #wakeFd: number;
  readonly #family: number;
  readonly #port: number;
  readonly #slotSize: number;
  readonly #batch: number;
  readonly #data: Uint8Array<ArrayBuffer>;
  readonly #names: Uint8Array<ArrayBuffer>;
  readonly #namesView: DataView;
  readonly #msgs: Uint8Array<ArrayBuffer>;
  readonly #msgsView: DataView;
  readonly #iovecs: Uint8Array<ArrayBuffer>;
  // Larger than it needs to be, so V8 keeps it off its heap while a pool thread holds its address.
  readonly #pollfds = new Uint8Array(128);
  readonly #onError: (message: string, err: unknown) => void;
  readonly #v4Text = new Map<number, string>();
  readonly #mappedText = new Map<number, string>();
  readonly #v6Text = new Map<string, string>();
  readonly #ntopBuffer = new Uint8Array(64);
  #loop: Promise<void> | undefined;
  #closing = false;
  #closed = false;

  private constructor(
    fd: number,
    wakeFd: number,
    family: number,
    port: number,
    opts: UdpBatchReceiverOptions,
  ) {
    this.#fd = fd;
    this.#wakeFd = wakeFd;
    this.#family = family;
    this.#port = port;
    this.#onError = opts.onError ?? (() => {});
    this.#slotSize = opts.slotSize;
    const fitting = Math.max(1, Math.floor(MAX_BUFFER_BYTES / opts.slotSize));
    this.#batch = Math.max(1, Math.min(opts.batch ?? DEFAULT_BATCH, fitting, 1024));
    const n = this.#batch;
    this.#data = new Uint8Array(n * opts.slotSize);
    // At least 128 bytes each, so V8 keeps them off its heap, where they never move.
    this.#names = new Uint8Array(Math.max(n * NAME_STRIDE, 128));
    this.#namesView = new DataView(this.#names.buffer);
    this.#msgs = new Uint8Array(Math.max(n * MMSGHDR_SIZE, 128));
    this.#msgsView = new DataView(this.#msgs.buffer);
    this.#iovecs = new Uint8Array(Math.max(n * IOVEC_SIZE, 128));
    const iov = new DataView(this.#iovecs.buffer);
    const data = addressOf(this.#data);
    const names = addressOf(this.#names);
    const iovecs = addressOf(this.#iovecs);
    for (let i = 0; i < n; i++) {
      iov.setBigUint64(i * IOVEC_SIZE, data + BigInt(i * opts.slotSize), true);
      iov.setBigUint64(i * IOVEC_SIZE + 8, BigInt(opts.slotSize), true);
      const m = i * MMSGHDR_SIZE;
      this.#msgsView.setBigUint64(m, names + BigInt(i * NAME_STRIDE), true);
      this.#msgsView.setUint32(m + 8, SOCKADDR_SIZE, true);
      this.#msgsView.setBigUint64(m + 16, iovecs + BigInt(i * IOVEC_SIZE), true);
      this.#msgsView.setBigUint64(m + 24, 1n, true);
      // msg_control, msg_controllen, msg_flags: zero.
    }
    const pfd = new DataView(this.#pollfds.buffer);
    pfd.setInt32(0, fd, true);
    pfd.setInt16(4, POLLIN, true);
    pfd.setInt32(8, wakeFd, true);
    pfd.setInt16(12, POLLIN, true);
  }

  /** Creates, configures and binds the socket; throws `UdpSocketError` (errno) or `TypeError` (address). */
  static open(opts: UdpBatchReceiverOptions): UdpBatchReceiver {
    if (!Number.isInteger(opts.slotSize) || opts.slotSize < 1 || opts.slotSize > 65536) {
      throw new RangeError(`slot size ${opts.slotSize} is outside 1..65536`);
    }
    const { family, bytes } = socketAddress(opts.address, opts.port);
    const where = family === AF_INET6 ? `[${opts.address}]:${opts.port}` : `${opts.address}:${opts.port}`;
    const fd = libc.socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new UdpSocketError("socket", lastErrno(), "cannot create a UDP socket");
    let wakeFd = -1;
    try {
      if (family === AF_INET6) {
        setInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, opts.v6Only === false ? 0 : 1, "IPV6_V6ONLY");
      }
      if (opts.receiveBufferBytes !== undefined && opts.receiveBufferBytes > 0) {
        setInt(fd, SOL_SOCKET, SO_RCVBUF, opts.receiveBufferBytes, "SO_RCVBUF");
      }
      if (libc.bind(fd, bytes, bytes.byteLength) !== 0) {
        throw new UdpSocketError("bind", lastErrno(), `cannot bind ${where}`);
      }
      const name = new Uint8Array(SOCKADDR_SIZE);
      const length = new Uint32Array([SOCKADDR_SIZE]);
      if (libc.getsockname(fd, name, new Uint8Array(length.buffer)) !== 0) {
        throw new UdpSocketError("getsockname", lastErrno(), `cannot read the address bound at ${where}`);
      }
      const port = new DataView(name.buffer).getUint16(2, false);
      wakeFd = libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (wakeFd < 0) throw new UdpSocketError("eventfd", lastErrno(), "cannot create an eventfd");
      return new UdpBatchReceiver(fd, wakeFd, family, port, opts);
    } catch (err) {
      libc.close(fd);
      if (wakeFd >= 0) libc.close(wakeFd);
      throw err;
    }
  }

  /** The port bound (the one the kernel picked when asked for 0). */
  get port(): number {
    return this.#port;
  }

  /** "ipv4" or "ipv6": the socket's family. */
  get family(): "ipv4" | "ipv6" {
    return this.#family === AF_INET ? "ipv4" : "ipv6";
  }

  /** Datagrams per recvmmsg call. */
  get batch(): number {
    return this.#batch;
  }

  /** The socket's receive buffer as the kernel reports it (SO_RCVBUF, already doubled). */
  receiveBufferBytes(): number {
    const value = new Int32Array(1);
    const length = new Uint32Array([4]);
    const rc = libc.getsockopt(
      this.#fd,
      SOL_SOCKET,
      SO_RCVBUF,
      new Uint8Array(value.buffer),
      new Uint8Array(length.buffer),
    );
    if (rc !== 0) throw new UdpSocketError("getsockopt", lastErrno(), "cannot read SO_RCVBUF");
    return value[0]!;
  }

  /** Starts reading; `handler` is called for every datagram until `close`. */
  start(handler: DatagramHandler): void {
    if (this.#loop !== undefined || this.#closed) throw new Error("the UDP receiver was already started");
    this.#loop = this.#run(handler);
  }

  /**
   * Reads what is waiting now (up to `maxCalls` recvmmsg calls) and hands it to `handler`; returns the number
   * of datagrams. `start` does this on every wake-up; it is public for tests and for draining without a loop.
   */
  drain(handler: DatagramHandler, maxCalls = CALLS_PER_WAKEUP): number {
    let total = 0;
    for (let call = 0; call < maxCalls && !this.#closing && !this.#closed; call++) {
      const n = libc.recvmmsg(this.#fd, this.#msgs, this.#batch, MSG_DONTWAIT | MSG_TRUNC, null);
      if (n < 0) {
        const errno = lastErrno();
        if (errno === EAGAIN || errno === EINTR) break;
        this.stats.errors++;
        this.#onError("recvmmsg failed", new UdpSocketError("recvmmsg", errno, "cannot receive datagrams"));
        break;
      }
      if (n === 0) break;
      this.stats.batches++;
      total += n;
      this.#deliver(n, handler);
      if (n < this.#batch) break;
    }
    return total;
  }

  #deliver(n: number, handler: DatagramHandler): void {
    const msgs = this.#msgsView;
    const slot = this.#slotSize;
    for (let i = 0; i < n; i++) {
      const m = i * MMSGHDR_SIZE;
      // The kernel wrote the sender's address length; the next call needs the full size again.
      msgs.setUint32(m + 8, SOCKADDR_SIZE, true);
      if (this.#closing) continue; // the handler closed the receiver: the rest of the batch is dropped
      const length = msgs.getUint32(m + MSG_LEN_OFFSET, true);
      if (length > slot) this.stats.truncated++;
      const start = i * slot;
      const data = this.#data.subarray(start, start + (length < slot ? length : slot));
      const name = i * NAME_STRIDE;
      const port = (this.#names[name + 2]! << 8) | this.#names[name + 3]!;
      this.stats.datagrams++;
      try {
        handler(data, length, this.#sourceText(name), port);
      } catch (err) {
        this.stats.errors++;
        this.#onError("the datagram handler failed", err);
      }
    }
  }

  /** The text of the sender address in name slot `offset`, remembered per address. */
  #sourceText(offset: number): string {
    const v = this.#namesView;
    if (v.getUint16(offset, true) === AF_INET) {
      const key = v.getUint32(offset + 4, true);
      return this.#v4Text.get(key) ?? this.#remember(this.#v4Text, key, AF_INET, offset + 4);
    }
    const w0 = v.getUint32(offset + 8, true), w1 = v.getUint32(offset + 12, true);
    const w2 = v.getUint32(offset + 16, true), w3 = v.getUint32(offset + 20, true);
    if (w0 === 0 && w1 === 0 && w2 === 0xffff0000) {
      return this.#mappedText.get(w3) ?? this.#remember(this.#mappedText, w3, AF_INET6, offset + 8);
    }
    const key = `${w0},${w1},${w2},${w3}`;
    return this.#v6Text.get(key) ?? this.#remember(this.#v6Text, key, AF_INET6, offset + 8);
  }

  #remember<K>(cache: Map<K, string>, key: K, family: number, offset: number): string {
    const size = family === AF_INET ? 4 : 16;
    const raw = this.#names.slice(offset, offset + size);
    const p = libc.inet_ntop(family, raw, this.#ntopBuffer, this.#ntopBuffer.byteLength);
    const text = p === null ? "" : Deno.UnsafePointerView.getCString(p);
    if (cache.size >= MAX_CACHED_SOURCES) cache.clear();
    cache.set(key, text);
    return text;
  }

  async #run(handler: DatagramHandler): Promise<void> {
    const pfd = new DataView(this.#pollfds.buffer);
    while (!this.#closing) {
      // Whatever is queued first: a full drain goes straight back to poll, which returns at once and lets
      // timers and other I/O run in between.
      this.drain(handler);
      if (this.#closing) break;
      const rc = await libc.pollAsync(this.#pollfds, 2n, -1);
      // errno is lost on the pool thread; poll on two valid descriptors fails with EINTR at most.
      if (rc > 0 && (pfd.getInt16(14, true) & POLLIN) !== 0) break; // woken by close()
    }
  }

  /** Stops reading (a wait in progress returns at once) and closes the socket. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closing = true;
    if (this.#loop !== undefined) {
      libc.write(this.#wakeFd, new Uint8Array(new BigUint64Array([1n]).buffer), 8n);
      await this.#loop;
    }
    if (this.#closed) return;
    this.#closed = true;
    libc.close(this.#fd);
    libc.close(this.#wakeFd);
  }
}

function setInt(fd: number, level: number, name: number, value: number, what: string): void {
  const v = new Int32Array([value]);
  if (libc.setsockopt(fd, level, name, new Uint8Array(v.buffer), 4) !== 0) {
    throw new UdpSocketError("setsockopt", lastErrno(), `cannot set ${what}`);
  }
}

/** One datagram for `UdpSender.send`: bytes, destination address (text, IPv6 may carry a %zone) and port. */
export interface OutgoingDatagram {
  data: Uint8Array;
  address: string;
  port: number;
}

/** A remembered socket address: its bytes and where they are. */
interface Destination {
  name: Uint8Array<ArrayBuffer>;
  at: number;
}

/** Writes a pointer or size (below 2^53) as a little-endian 64-bit field. */
function setPointer(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value % 0x1_0000_0000, true);
  view.setUint32(offset + 4, Math.floor(value / 0x1_0000_0000), true);
}

/** Datagrams per send that go through structs kept by the sender (at least 128 bytes: off V8's heap). */
const SMALL_BATCH = 4;
/** Destinations whose socket address is remembered (then the memory starts over). */
const MAX_CACHED_DESTINATIONS = 1024;

/**
 * A UDP socket for sending (bound to an ephemeral port, nonblocking): `send` hands a few datagrams to the
 * kernel with one sendmmsg and reports each one's outcome at once, so a caller never waits on a callback.
 * A full socket buffer is an outcome (-EAGAIN) like any other refusal, never a wait.
 */
export class UdpSender {
  readonly #fd: number;
  readonly #family: number;
  /** Socket addresses by destination, with the address of their bytes. */
  readonly #destinations = new Map<string, Destination>();
  /** The last destination looked up (a batch mostly goes to one collector). */
  #lastAddress = "";
  #lastPort = -1;
  #last: Destination | undefined;
  // The structs of a batch, kept (and their addresses taken) once, grown to the largest batch seen. At least
  // 128 bytes each, so V8 keeps them off its heap, where they never move.
  #capacity = 0;
  #msgs = new Uint8Array(0);
  #iovBase = 0;
  #msgsView = new DataView(new ArrayBuffer(0));
  #iovecsView = new DataView(new ArrayBuffer(0));
  /** The buffer the last datagram was in, and its address (fireflies share one encoding buffer). */
  #dataBuffer: ArrayBufferLike | undefined;
  #dataBase = 0;
  #closed = false;

  private constructor(fd: number, family: number) {
    this.#fd = fd;
    this.#family = family;
    this.#grow(SMALL_BATCH);
  }

  /** An IPv4 socket, or an IPv6 one (v6-only, as node:dgram's udp6 with ipv6Only); throws `UdpSocketError`. */
  static open(family: "ipv4" | "ipv6"): UdpSender {
    const af = family === "ipv4" ? AF_INET : AF_INET6;
    const fd = libc.socket(af, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new UdpSocketError("socket", lastErrno(), `cannot create a UDP socket (${family})`);
    try {
      if (af === AF_INET6) setInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
      const { bytes } = socketAddress(af === AF_INET ? "0.0.0.0" : "::", 0);
      if (libc.bind(fd, bytes, bytes.byteLength) !== 0) {
        throw new UdpSocketError("bind", lastErrno(), `cannot bind a UDP socket (${family})`);
      }
    } catch (err) {
      libc.close(fd);
      throw err;
    }
    return new UdpSender(fd, af);
  }

  /** Structs for `n` datagrams (the next power of two); the old ones are dropped after their last send. */
  #grow(n: number): void {
    let capacity = Math.max(this.#capacity, SMALL_BATCH);
    while (capacity < n) capacity *= 2;
    this.#msgs = new Uint8Array(Math.max(capacity * MMSGHDR_SIZE, 128));
    const iovecs = new Uint8Array(Math.max(capacity * IOVEC_SIZE, 128));
    this.#iovBase = Number(addressOf(iovecs));
    this.#msgsView = new DataView(this.#msgs.buffer);
    this.#iovecsView = new DataView(iovecs.buffer);
    this.#capacity = capacity;
  }

  /** The address of a datagram's first byte; its buffer's is remembered while datagrams share it. */
  #dataAddress(data: Uint8Array): number {
    const buffer = data.buffer;
    if (buffer !== this.#dataBuffer) {
      this.#dataBase = Number(addressOf(new Uint8Array(buffer as ArrayBuffer)));
      this.#dataBuffer = buffer;
    }
    return this.#dataBase + data.byteOffset;
  }

  /**
   * Sends the datagrams (one sendmmsg when all go through; a refused one is skipped and the rest sent).
   * Returns, per datagram, the bytes sent or -errno; an address of the other family gives -EAFNOSUPPORT.
   */
  send(datagrams: readonly OutgoingDatagram[]): number[] {
    const n = datagrams.length;
    const results = new Array<number>(n).fill(0);
    if (this.#closed) return results.fill(-9); // EBADF
    if (n > this.#capacity) this.#grow(n);
    const msgs = this.#msgs, mv = this.#msgsView, iv = this.#iovecsView, iovBase = this.#iovBase;
    const keep: Uint8Array[] = [];
    const index: number[] = [];
    for (let i = 0; i < n; i++) {
      const d = datagrams[i]!;
      const dest = d.address === this.#lastAddress && d.port === this.#lastPort
        ? this.#last
        : this.#destination(d.address, d.port);
      if (dest === undefined) {
        results[i] = -97; // EAFNOSUPPORT
        continue;
      }
      const k = index.length;
      // V8 may keep (and move) small typed arrays on its heap: those are copied to a buffer that stays put.
      let data = d.data;
      if (data.byteLength <= 64) {
        const copy = new Uint8Array(128);
        copy.set(data);
        data = copy.subarray(0, data.byteLength);
      }
      keep.push(data);
      // Addresses as two 32-bit halves of a number: user-space pointers fit in 2^53, and no BigInt is made.
      setPointer(iv, k * IOVEC_SIZE, this.#dataAddress(data));
      setPointer(iv, k * IOVEC_SIZE + 8, d.data.byteLength);
      setPointer(mv, k * MMSGHDR_SIZE, dest.at);
      mv.setUint32(k * MMSGHDR_SIZE + 8, dest.name.byteLength, true);
      setPointer(mv, k * MMSGHDR_SIZE + 16, iovBase + k * IOVEC_SIZE);
      setPointer(mv, k * MMSGHDR_SIZE + 24, 1);
      index.push(i);
    }
    let k = 0;
    while (k < index.length) {
      const rc = libc.sendmmsg(this.#fd, msgs.subarray(k * MMSGHDR_SIZE), index.length - k, MSG_NOSIGNAL);
      if (rc < 0) {
        // The first of the remaining ones was refused: record why, and go on with the next.
        results[index[k]!] = -lastErrno();
        k++;
        continue;
      }
      for (let j = k; j < k + rc; j++) {
        results[index[j]!] = mv.getUint32(j * MMSGHDR_SIZE + MSG_LEN_OFFSET, true);
      }
      k += rc;
    }
    void keep; // the buffers the structs point into stay referenced until here
    return results;
  }

  /** The sockaddr for an address text and port, remembered per destination; undefined for the other family. */
  #destination(address: string, port: number): Destination | undefined {
    const key = `${address} ${port}`;
    let dest = this.#destinations.get(key);
    if (dest === undefined) {
      let parsed;
      try {
        parsed = socketAddress(address, port);
      } catch {
        return undefined;
      }
      if (parsed.family !== this.#family) return undefined;
      // At least 128 bytes, so V8 keeps it off its heap; the address length says how much is used.
      const padded = new Uint8Array(128);
      padded.set(parsed.bytes);
      dest = { name: padded.subarray(0, parsed.bytes.byteLength), at: Number(addressOf(padded)) };
      if (this.#destinations.size >= MAX_CACHED_DESTINATIONS) this.#destinations.clear();
      this.#destinations.set(key, dest);
    }
    this.#lastAddress = address;
    this.#lastPort = port;
    this.#last = dest;
    return dest;
  }

  /**
   * Waits, on a pool thread, until the socket can take a datagram (or `timeoutMs` passes): an event-loop
   * turn when it can at once, a real wait when its buffer is full. Do not close the socket meanwhile.
   */
  async writable(timeoutMs: number): Promise<boolean> {
    if (this.#closed) return false;
    const pollfd = new Uint8Array(128);
    const view = new DataView(pollfd.buffer);
    view.setInt32(0, this.#fd, true);
    view.setInt16(4, POLLOUT, true);
    const rc = await libc.pollAsync(pollfd, 1n, timeoutMs);
    return rc > 0 && (view.getInt16(6, true) & POLLOUT) !== 0;
  }

  /** Closes the socket; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc.close(this.#fd);
  }
}
