/**
 * The interface of the watcher BPF object (bpf/watcher.h mirrored once): names, the port-range
 * configuration and the ring-buffer event. tests/unit/sock_ops_layout_test.ts checks the offsets
 * against the BTF of the built object.
 */
import type { Endpoint } from "../net/ip.ts";
import { sockAddressFrom } from "../bpf/sock_addr.ts";

/** The sock_ops program. */
export const WATCHER_PROGRAM_NAME = "flowd_watcher";
/** The ring buffer of events. */
export const EVENTS_MAP = "flowEvents";
/** Per-CPU count of events lost to a full ring buffer. */
export const LOST_MAP = "lostEvents";
/** Global-data section of `struct watcher_config`. */
export const CONFIG_SECTION = ".rodata.config";

export const CONFIG_SIZE = 8;
export const EVENT_SIZE = 56;

/** TCP states the watcher reports (include/net/tcp_states.h). */
export const TCP_ESTABLISHED = 1;
export const TCP_CLOSE = 7;

/** Field offsets of `struct watcher_event` (name as in C, offset, size). */
export const EVENT_FIELDS = {
  local: [0, 16],
  remote: [16, 16],
  cookie: [32, 8],
  ktime_ns: [40, 8],
  local_port: [48, 2],
  remote_port: [50, 2],
  family: [52, 1],
  old_state: [53, 1],
  new_state: [54, 1],
  reserved: [55, 1],
} as const satisfies Record<string, readonly [number, number]>;

/** Field offsets of `struct watcher_config`. */
export const CONFIG_FIELDS = {
  min_src_port: [0, 2],
  max_src_port: [2, 2],
  min_dst_port: [4, 2],
  max_dst_port: [6, 2],
} as const satisfies Record<string, readonly [number, number]>;

/** Inclusive port ranges; 0 disables a bound. */
export interface PortRanges {
  minSourcePort: number;
  maxSourcePort: number;
  minDestinationPort: number;
  maxDestinationPort: number;
}

/** The bytes of `struct watcher_config`. */
export function encodeWatcherConfig(r: PortRanges): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(CONFIG_SIZE);
  const v = new DataView(out.buffer);
  v.setUint16(CONFIG_FIELDS.min_src_port[0], r.minSourcePort, true);
  v.setUint16(CONFIG_FIELDS.max_src_port[0], r.maxSourcePort, true);
  v.setUint16(CONFIG_FIELDS.min_dst_port[0], r.minDestinationPort, true);
  v.setUint16(CONFIG_FIELDS.max_dst_port[0], r.maxDestinationPort, true);
  return out;
}

/** A decoded event: the connection seen from this host. */
export interface WatcherEvent {
  /** This host's end (IPv4 for IPv4-mapped addresses of dual-stack sockets). */
  readonly local: Endpoint;
  readonly remote: Endpoint;
  /** The socket cookie: the same for a connection's ESTABLISHED and CLOSE. */
  readonly cookie: bigint;
  /** bpf_ktime_get_ns() when the program saw the change (CLOCK_MONOTONIC). */
  readonly ktimeNs: bigint;
  /** 2 or 10, the socket's family. */
  readonly socketFamily: number;
  readonly oldState: number;
  readonly newState: number;
}

/** Decodes one event; throws a RangeError for a record of the wrong size. */
export function decodeWatcherEvent(bytes: Uint8Array): WatcherEvent {
  if (bytes.byteLength !== EVENT_SIZE) {
    throw new RangeError(`watcher event has ${bytes.byteLength} bytes, expected ${EVENT_SIZE}`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const address = (f: "local" | "remote") =>
    sockAddressFrom(bytes.subarray(EVENT_FIELDS[f][0], EVENT_FIELDS[f][0] + 16));
  return {
    local: { address: address("local"), port: v.getUint16(EVENT_FIELDS.local_port[0], true) },
    remote: { address: address("remote"), port: v.getUint16(EVENT_FIELDS.remote_port[0], true) },
    cookie: v.getBigUint64(EVENT_FIELDS.cookie[0], true),
    ktimeNs: v.getBigUint64(EVENT_FIELDS.ktime_ns[0], true),
    socketFamily: v.getUint8(EVENT_FIELDS.family[0]),
    oldState: v.getUint8(EVENT_FIELDS.old_state[0]),
    newState: v.getUint8(EVENT_FIELDS.new_state[0]),
  };
}
