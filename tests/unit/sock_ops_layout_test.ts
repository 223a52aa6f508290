// The TypeScript mirrors of bpf/skops.h and bpf/watcher.h: offsets against the BTF of the built objects,
// and decoding of crafted records.
import assert from "node:assert/strict";
import {
  CONFIG_SIZE as SKOPS_CONFIG_SIZE,
  decodeRecord,
  encodeConfig,
  encodeFlowKey,
  EVENT_RTT,
  EVENT_STATE,
  FLOW_STATE_SIZE,
  KEY_SIZE,
  keyId,
  RECORD_FIELDS,
  RECORD_SIZE,
} from "../../src/enrichers/skops_layout.ts";
import {
  CONFIG_FIELDS,
  CONFIG_SIZE as WATCHER_CONFIG_SIZE,
  decodeWatcherEvent,
  encodeWatcherConfig,
  EVENT_FIELDS,
  EVENT_SIZE,
} from "../../src/plugins/iperf3_layout.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { hasCommand } from "../helpers/privileged.ts";

interface BtfStruct {
  size: number;
  members: [string, number, number][];
}

/** Structs of a built object as its BTF describes them: name → size and members (name, offset, size). */
async function btfStructs(object: string): Promise<Map<string, BtfStruct>> {
  const path = new URL(`../../bpf/build/${object}`, import.meta.url).pathname;
  const out = await new Deno.Command("bpftool", {
    args: ["-j", "btf", "dump", "file", path],
    stdout: "piped",
  })
    .output();
  assert.ok(out.success, `bpftool cannot read ${path}: build it with scripts/build_bpf.sh`);
  const types = JSON.parse(new TextDecoder().decode(out.stdout)).types as {
    kind: string;
    name: string;
    size: number;
    members?: { name: string; bits_offset: number }[];
  }[];
  const structs = new Map<string, BtfStruct>();
  for (const t of types) {
    if (t.kind !== "STRUCT" || !t.members) continue;
    const offsets = t.members.map((m) => m.bits_offset / 8);
    structs.set(t.name, {
      size: t.size,
      members: t.members.map((m, i) => [m.name, offsets[i]!, (offsets[i + 1] ?? t.size) - offsets[i]!]),
    });
  }
  return structs;
}

function table(fields: Record<string, readonly [number, number]>): [string, number, number][] {
  return Object.entries(fields).map(([name, [offset, size]]) => [name, offset, size]);
}

const HAS_BPFTOOL = hasCommand("bpftool");
if (!HAS_BPFTOOL) console.error("SKIPPED (needs bpftool): layout checks against BTF");

Deno.test({
  name: "skops layout: record, key, flow state and config match the object's BTF",
  ignore: !HAS_BPFTOOL,
  fn: async () => {
    const s = await btfStructs("skops.bpf.o");
    assert.equal(s.get("skops_record")?.size, RECORD_SIZE);
    assert.deepEqual(s.get("skops_record")!.members, table(RECORD_FIELDS));
    assert.deepEqual(s.get("skops_flow_key"), {
      size: KEY_SIZE,
      members: [["local", 0, 16], ["remote", 16, 16], ["local_port", 32, 2], ["remote_port", 34, 2], [
        "reserved",
        36,
        4,
      ]],
    });
    assert.equal(s.get("skops_flow_state")?.size, FLOW_STATE_SIZE);
    assert.deepEqual(s.get("skops_config"), {
      size: SKOPS_CONFIG_SIZE,
      members: [["interval_ns", 0, 8], ["strategy", 8, 4], ["reserved", 12, 4]],
    });
  },
});

Deno.test({
  name: "watcher layout: event and config match the object's BTF",
  ignore: !HAS_BPFTOOL,
  fn: async () => {
    const s = await btfStructs("watcher.bpf.o");
    assert.deepEqual(s.get("watcher_event"), { size: EVENT_SIZE, members: table(EVENT_FIELDS) });
    assert.deepEqual(s.get("watcher_config"), { size: WATCHER_CONFIG_SIZE, members: table(CONFIG_FIELDS) });
  },
});

function record(fill: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const b = new Uint8Array(RECORD_SIZE);
  fill(new DataView(b.buffer), b);
  return b;
}

const at = (f: keyof typeof RECORD_FIELDS) => RECORD_FIELDS[f][0];

Deno.test("skops record: tcp_get_info's arithmetic, jiffies at the kernel's HZ, u32 wrap-around", () => {
  const bytes = record((v, b) => {
    v.setBigUint64(at("jiffies"), (1n << 32n) + 100n, true); // the low word wrapped past the stamps
    v.setUint32(at("lsndtime"), 0xffff_fff0, true); // 116 jiffies ago
    v.setUint32(at("lrcvtime"), 100, true); // just now
    v.setUint32(at("rcv_tstamp"), 75, true); // 25 jiffies ago
    v.setUint32(at("rto_jiffies"), 51, true);
    v.setUint32(at("ato_jiffies"), 10, true);
    v.setUint32(at("srtt_us8"), 8 * 1234 + 7, true);
    v.setUint32(at("mdev_us4"), 4 * 99 + 3, true);
    v.setUint32(at("rcv_rtt_us8"), 8 * 50, true);
    v.setUint32(at("write_seq"), 3, true);
    v.setUint32(at("snd_nxt"), 0xffff_fffe, true); // 5 bytes not sent yet, across the sequence wrap
    v.setUint32(at("snd_mss"), 1448, true);
    v.setUint32(at("rate_delivered"), 10, true);
    v.setUint32(at("rate_interval_us"), 1000, true);
    v.setUint8(at("chrono_type"), 2); // rwnd-limited since chrono_start
    v.setUint32(at("chrono_start"), 75, true);
    v.setUint32(at("chrono_stat"), 100, true);
    v.setUint32(at("chrono_stat") + 4, 50, true);
    v.setBigUint64(at("max_pacing_rate"), 0xffff_ffff_ffff_ffffn, true);
    v.setBigUint64(at("bytes_acked"), 123n, true);
    v.setUint8(at("state"), 1);
    v.setUint8(at("snd_wscale"), 7);
    v.setUint8(at("rcv_wscale"), 10);
    v.setUint32(at("event"), EVENT_RTT, true);
    v.setUint32(at("new_state"), 1, true);
    b.set(new TextEncoder().encode("cubic"), at("ca_name"));
    b.set(encodeFlowKey(
      { address: IpAddress.parse("10.0.0.1"), port: 40000 },
      { address: IpAddress.parse("10.0.0.2"), port: 5201 },
    ));
  });
  const r = decodeRecord(bytes, 250);
  const t = r.info.tcpInfo!;
  assert.equal(t.lastDataSent, 464, "116 jiffies at 250 Hz");
  assert.equal(t.lastDataRecv, 0);
  assert.equal(t.lastAckRecv, 100);
  assert.equal(t.rto, 204_000);
  assert.equal(t.ato, 40_000);
  assert.equal(t.rtt, 1234);
  assert.equal(t.rttVar, 99);
  assert.equal(t.rcvRtt, 50);
  assert.equal(t.notsentBytes, 5);
  assert.equal(t.deliveryRate, 14_480_000n);
  assert.equal(t.rwndLimited, 300_000n, "50 jiffies + the running 25");
  assert.equal(t.busyTime, 700_000n);
  assert.equal(t.sndBufLimited, 0n);
  assert.equal(t.maxPacingRate, 0xffff_ffff_ffff_ffffn);
  assert.equal(t.bytesAcked, 123n);
  assert.deepEqual([t.sndWscale, t.rcvdWscale], [7, 10]);
  assert.equal(t.state, 1);
  assert.deepEqual(r.info.cong, { algorithm: "cubic" });
  assert.equal(r.event, EVENT_RTT);
  assert.equal(
    r.keyId,
    keyId(encodeFlowKey(
      { address: IpAddress.parse("10.0.0.1"), port: 40000 },
      { address: IpAddress.parse("10.0.0.2"), port: 5201 },
    )),
  );
  // At 300 Hz the conversion is exact (the original's 1000000/HZ first would give 169983).
  assert.equal(decodeRecord(bytes, 300).info.tcpInfo!.rto, 170_000);
});

Deno.test("skops record: a state change reports the state entered; a wrong size is refused", () => {
  const r = decodeRecord(
    record((v) => {
      v.setUint32(at("event"), EVENT_STATE, true);
      v.setUint32(at("new_state"), 7, true);
      v.setUint8(at("state"), 4);
    }),
    1000,
  );
  assert.equal(r.info.tcpInfo!.state, 7);
  assert.equal(r.info.cong, undefined, "no name, no cong");
  assert.throws(() => decodeRecord(new Uint8Array(RECORD_SIZE - 8), 1000), /has 304 bytes, expected 312/);
});

Deno.test("skops key and config bytes: IPv4 as ::ffff:a.b.c.d, ports little-endian, interval in ns", () => {
  const key = encodeFlowKey(
    { address: IpAddress.parse("192.0.2.1"), port: 0x1234 },
    { address: IpAddress.parse("2001:db8::2"), port: 443 },
  );
  assert.deepEqual([...key.subarray(0, 16)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
  assert.deepEqual([...key.subarray(16, 32)], [...IpAddress.parse("2001:db8::2").bytes()]);
  assert.deepEqual([...key.subarray(32)], [0x34, 0x12, 0xbb, 0x01, 0, 0, 0, 0]);
  const config = new DataView(encodeConfig({ intervalMs: 1500, strategy: "transition" }).buffer);
  assert.equal(config.getBigUint64(0, true), 1_500_000_000n);
  assert.equal(config.getUint32(8, true), 1);
});

Deno.test("watcher event: addresses (IPv4-mapped read as IPv4), cookie, ports and states", () => {
  const b = new Uint8Array(EVENT_SIZE);
  const v = new DataView(b.buffer);
  b.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3], 0);
  b.set(IpAddress.parse("fd00::2").bytes(), 16);
  v.setBigUint64(32, 0xdead_beef_0000_0001n, true);
  v.setUint16(48, 40001, true);
  v.setUint16(50, 5201, true);
  b[52] = 10;
  b[53] = 2;
  b[54] = 1;
  const e = decodeWatcherEvent(b);
  assert.equal(e.local.address.toString(), "10.1.2.3");
  assert.equal(e.local.address.family, "ipv4");
  assert.equal(e.remote.address.toString(), "fd00::2");
  assert.deepEqual([e.local.port, e.remote.port, e.socketFamily, e.oldState, e.newState], [
    40001,
    5201,
    10,
    2,
    1,
  ]);
  assert.equal(e.cookie, 0xdead_beef_0000_0001n);
  assert.throws(() => decodeWatcherEvent(new Uint8Array(64)), /64 bytes, expected 56/);
  const c = new DataView(
    encodeWatcherConfig({
      minSourcePort: 1,
      maxSourcePort: 2,
      minDestinationPort: 5201,
      maxDestinationPort: 0,
    })
      .buffer,
  );
  assert.deepEqual([c.getUint16(0, true), c.getUint16(2, true), c.getUint16(4, true), c.getUint16(6, true)], [
    1,
    2,
    5201,
    0,
  ]);
});
