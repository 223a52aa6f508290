/**
 * Raw netlink sockets (rtnetlink, sock_diag) through libc: send a request, collect its replies.
 *
 * Receives never block the event loop: the socket is nonblocking, a synchronous `recv` reads what is
 * queued (and errno right after it), and only when nothing is queued does a libc `poll` wait on a pool
 * thread. Requests on one socket are serialised, so concurrent callers never see each other's replies.
 */
import {
  AF_NETLINK,
  bind,
  close,
  EAGAIN,
  EINTR,
  getsockname,
  inNetworkNamespace,
  MSG_DONTWAIT,
  MSG_PEEK,
  MSG_TRUNC,
  recv,
  sendto,
  setsockoptInt,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_RAW,
  socket,
  SOL_NETLINK,
  SOL_SOCKET,
  strerror,
  waitReadable,
} from "./libc_socket.ts";
import {
  encodeMessage,
  type ErrorReply,
  NetlinkError,
  type NetlinkMessage,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  parseMessages,
  ReplyCollector,
  type ReplyMode,
} from "./netlink_framing.ts";

export { NetlinkError, type NetlinkMessage } from "./netlink_framing.ts";

/** Netlink protocol families this project uses. */
export const NETLINK_ROUTE = 0;
export const NETLINK_SOCK_DIAG = 4;

const NETLINK_CAP_ACK = 10;
const NETLINK_EXT_ACK = 11;

/** Receive buffer floor: kernel dump chunks are at most 32 KiB, so 64 KiB always holds one. */
const MIN_RECEIVE_BUFFER = 64 * 1024;
/** Socket receive queue size asked for, so big dumps never hit ENOBUFS. */
const DEFAULT_SO_RCVBUF = 1024 * 1024;
/** How many times a dump the kernel flagged as inconsistent is restarted before giving up. */
const DUMP_RETRIES = 3;
/** Longest single wait for readiness; bounds how long a close() goes unnoticed by a waiting request. */
const POLL_SLICE_MS = 200;
/** Datagrams a dump reads back to back before it lets other work run. */
const YIELD_EVERY_DATAGRAMS = 8;
/** Upper bound on datagrams read out after a failed request (a dump of 100k sockets is about 1,500). */
const MAX_DRAIN_DATAGRAMS = 100_000;

/** Options for `NetlinkSocket.open`. */
export interface NetlinkSocketOptions {
  /** Socket receive queue size in bytes (default 1 MiB; root may exceed net.core.rmem_max). */
  receiveQueueBytes?: number;
  /** Give up on a request when the kernel has not answered within this time (default 5000 ms). */
  timeoutMs?: number;
  /** Open the socket inside this network namespace (a path such as /run/netns/NAME); needs root. */
  netns?: string;
}

/** Options for one request. */
export interface RequestOptions {
  /** Extra header flags (NLM_F_REQUEST and NLM_F_DUMP or NLM_F_ACK are always set). */
  flags?: number;
}

function describeErrno(errno: number): string {
  return `${strerror(errno)} (errno ${errno})`;
}

/** An open netlink socket bound to a kernel-assigned port id. */
export class NetlinkSocket implements Disposable {
  #fd: number;
  #seq: number;
  #buffer = new Uint8Array(MIN_RECEIVE_BUFFER);
  #queue: Promise<unknown> = Promise.resolve();
  readonly protocol: number;
  readonly portId: number;
  readonly timeoutMs: number;
  /** Messages discarded because they answered an earlier, abandoned request. */
  staleMessages = 0;

  private constructor(fd: number, protocol: number, portId: number, timeoutMs: number) {
    this.#fd = fd;
    this.protocol = protocol;
    this.portId = portId;
    this.timeoutMs = timeoutMs;
    // Start from a value unlikely to collide with a previous process's leftovers on a reused port id.
    this.#seq = (Date.now() & 0x7fffffff) >>> 0;
  }

  /** Opens and binds a socket for `protocol` (NETLINK_ROUTE, NETLINK_SOCK_DIAG, ...). */
  static open(protocol: number, options: NetlinkSocketOptions = {}): NetlinkSocket {
    const create = () => socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
    let fd: number;
    try {
      fd = options.netns === undefined ? create() : inNetworkNamespace(options.netns, create);
    } catch (err) {
      throw new NetlinkError(err instanceof Error ? err.message : String(err), { cause: err });
    }
    if (fd < 0) {
      throw new NetlinkError(`cannot open netlink socket (protocol ${protocol}): ${describeErrno(-fd)}`, {
        errno: -fd,
      });
    }
    try {
      const queue = options.receiveQueueBytes ?? DEFAULT_SO_RCVBUF;
      // FORCE ignores rmem_max but needs CAP_NET_ADMIN; the plain option is capped but always allowed.
      if (setsockoptInt(fd, SOL_SOCKET, SO_RCVBUFFORCE, queue) < 0) {
        setsockoptInt(fd, SOL_SOCKET, SO_RCVBUF, queue);
      }
      // Best effort: older kernels lack these, and errors are still reported without them.
      setsockoptInt(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
      setsockoptInt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
      const address = sockaddrNl(0);
      const bound = bind(fd, address);
      if (bound < 0) {
        throw new NetlinkError(`cannot bind netlink socket: ${describeErrno(-bound)}`, { errno: -bound });
      }
      const got = getsockname(fd, address);
      if (got < 0) {
        throw new NetlinkError(`cannot read netlink port id: ${describeErrno(-got)}`, { errno: -got });
      }
      const portId = new DataView(address.buffer).getUint32(4, true);
      return new NetlinkSocket(fd, protocol, portId, options.timeoutMs ?? 5000);
    } catch (err) {
      close(fd);
      throw err;
    }
  }

  /** True until `close()`. */
  get isOpen(): boolean {
    return this.#fd >= 0;
  }

  /** Sends a dump request and returns every reply message up to NLMSG_DONE. */
  dump(type: number, payload: Uint8Array, options: RequestOptions = {}): Promise<NetlinkMessage[]> {
    return this.#serialised(async () => {
      for (let attempt = 1;; attempt++) {
        const collector = await this.#exchange(type, NLM_F_DUMP | (options.flags ?? 0), payload, "dump");
        if (!collector.interrupted) return collector.replies;
        if (attempt >= DUMP_RETRIES) {
          throw new NetlinkError(
            `netlink dump of message type ${type} was interrupted by concurrent changes ${attempt} times in a row`,
          );
        }
      }
    });
  }

  /**
   * Sends a dump request and hands each reply message to `onReply` as its datagram arrives: the message's
   * bytes are valid during the call only (no copy of the datagram, no array of the whole dump). A dump
   * the kernel flags as inconsistent is restarted, so `onReply` may then see a message again.
   */
  dumpEach(
    type: number,
    payload: Uint8Array,
    onReply: (reply: NetlinkMessage) => void,
    options: RequestOptions = {},
  ): Promise<void> {
    return this.#serialised(async () => {
      for (let attempt = 1;; attempt++) {
        const flags = NLM_F_DUMP | (options.flags ?? 0);
        const collector = await this.#exchange(type, flags, payload, "dump", onReply);
        if (!collector.interrupted) return;
        if (attempt >= DUMP_RETRIES) {
          throw new NetlinkError(
            `netlink dump of message type ${type} was interrupted by concurrent changes ${attempt} times in a row`,
          );
        }
      }
    });
  }

  /** Sends a request with NLM_F_ACK and returns the replies received before the kernel's acknowledgement. */
  request(type: number, payload: Uint8Array, options: RequestOptions = {}): Promise<NetlinkMessage[]> {
    return this.#serialised(async () => {
      const collector = await this.#exchange(type, NLM_F_ACK | (options.flags ?? 0), payload, "ack");
      return collector.replies;
    });
  }

  /** Closes the socket; later requests fail. Safe to call twice. */
  close(): void {
    if (this.#fd < 0) return;
    close(this.#fd);
    this.#fd = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #serialised<T>(job: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(job, job);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #exchange(
    type: number,
    flags: number,
    payload: Uint8Array,
    mode: ReplyMode,
    onReply?: (reply: NetlinkMessage) => void,
  ): Promise<ReplyCollector> {
    if (this.#fd < 0) throw new NetlinkError(`netlink socket is closed (message type ${type})`);
    this.#seq = (this.#seq + 1) >>> 0;
    const seq = this.#seq;
    const what = `netlink request type ${type}`;
    const message = encodeMessage({ type, flags: NLM_F_REQUEST | flags, seq, pid: 0 }, payload);
    const sent = sendto(this.#fd, message, 0, sockaddrNl(0));
    if (sent < 0) throw new NetlinkError(`${what}: send failed: ${describeErrno(-sent)}`, { errno: -sent });
    if (sent !== message.byteLength) {
      throw new NetlinkError(`${what}: sent ${sent} of ${message.byteLength} bytes`);
    }
    const collector = new ReplyCollector(seq, mode, this.portId, (reply: ErrorReply) =>
      new NetlinkError(
        `${what} failed: ${describeErrno(reply.errno)}${reply.extAck ? `: ${reply.extAck}` : ""}`,
        { errno: reply.errno, extAck: reply.extAck },
      ), onReply);
    const deadline = Date.now() + this.timeoutMs;
    let received = 0;
    try {
      while (!collector.done) {
        // The kernel builds each part of a dump inside the receive call: a big dump (10,000 sockets, ~100
        // datagrams) would hold the event loop for its whole length without a pause now and then.
        if (++received % YIELD_EVERY_DATAGRAMS === 0) await new Promise((r) => setTimeout(r, 0));
        const datagram = this.#receive();
        if (datagram === undefined) {
          const left = deadline - Date.now();
          if (left <= 0) {
            throw new NetlinkError(`${what}: no complete answer within ${this.timeoutMs} ms`, {
              errno: EAGAIN,
            });
          }
          // Short slices, so a close() during the wait is noticed promptly; whatever poll says (ready,
          // timeout, interrupted), the next receive finds out.
          await waitReadable(this.#fd, Math.min(left, POLL_SLICE_MS));
          if (this.#fd < 0) throw new NetlinkError(`${what}: socket closed while waiting for the answer`);
          continue;
        }
        // Collected replies outlive the receive buffer, which the next receive overwrites; handed-over
        // ones are used before it.
        collector.feed(parseMessages(onReply ? datagram : datagram.slice()));
      }
    } catch (err) {
      // An abandoned dump keeps the kernel's dump state busy (EBUSY for the next one) until it is read out.
      this.#drain();
      throw err;
    } finally {
      this.staleMessages += collector.skipped;
    }
    return collector;
  }

  /** Reads and drops whatever is queued; each read lets the kernel queue the next part of a dump. */
  #drain(): void {
    for (let i = 0; i < MAX_DRAIN_DATAGRAMS && this.#fd >= 0; i++) {
      try {
        if (this.#receive() === undefined) return;
      } catch {
        return;
      }
    }
  }

  /** One queued datagram (a view of the receive buffer, valid until the next call), or undefined if none. */
  #receive(): Uint8Array | undefined {
    for (;;) {
      // Peek at the size first, so a datagram larger than the buffer grows it instead of being cut.
      const size = recv(this.#fd, this.#buffer.subarray(0, 0), MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
      if (size === -EINTR) continue;
      if (size === -EAGAIN) return undefined;
      if (size < 0) {
        throw new NetlinkError(`netlink receive failed: ${describeErrno(-size)}`, { errno: -size });
      }
      if (size > this.#buffer.byteLength) this.#buffer = new Uint8Array(align64k(size));
      const n = recv(this.#fd, this.#buffer, MSG_TRUNC | MSG_DONTWAIT);
      if (n === -EINTR) continue;
      if (n < 0) throw new NetlinkError(`netlink receive failed: ${describeErrno(-n)}`, { errno: -n });
      if (n > this.#buffer.byteLength) {
        throw new NetlinkError(`netlink datagram of ${n} bytes truncated to ${this.#buffer.byteLength}`);
      }
      return this.#buffer.subarray(0, n);
    }
  }
}

function align64k(n: number): number {
  return Math.ceil(n / MIN_RECEIVE_BUFFER) * MIN_RECEIVE_BUFFER;
}

/** struct sockaddr_nl for the kernel (pid 0) or for binding with an automatic port id. */
function sockaddrNl(pid: number): Uint8Array {
  const address = new Uint8Array(12);
  const v = new DataView(address.buffer);
  v.setUint16(0, AF_NETLINK, true);
  v.setUint32(4, pid, true);
  return address;
}
