/**
 * Packet capture inside a namespace with tcpdump, decoded afterwards with tshark into one record per
 * packet. The capture file is removed on dispose.
 */
import { sh } from "./netns.ts";
import { scaled } from "./time_scale.ts";

/** A running capture. */
export interface Capture extends AsyncDisposable {
  /** Stops tcpdump (flushing every packet) and decodes the capture with tshark. */
  stop(fields: readonly string[], displayFilter?: string): Promise<Array<Record<string, string>>>;
  /** The raw bytes of every captured frame (after stop), for exact comparisons. */
  frames(): Promise<Uint8Array[]>;
  /** Waits until at least `count` frames are in the file (tcpdump writes each at once with -U). */
  waitFrames(count: number, timeoutMs?: number): Promise<void>;
  readonly file: string;
}

/** Starts `tcpdump -i ifname` in the namespace and waits until it listens. */
export async function startCapture(prefix: string[], ifname: string, filter: string[]): Promise<Capture> {
  const file = await Deno.makeTempFile({ suffix: ".pcap" });
  const [bin, ...args] = [
    ...prefix,
    "tcpdump",
    "-i",
    ifname,
    "--immediate-mode",
    "-U",
    "-n",
    // The kernel's capture ring holds buffer / snaplen frames: with -s 0 (256 KiB) and the default 2 MiB
    // that was 8 frames, and a burst of segments lost hundreds of packets. 64 KiB (a GSO segment's
    // most) and 64 MiB make it 1024.
    "-s",
    "65535",
    "-B",
    "65536",
    "-w",
    file,
    ...filter,
  ];
  const child = new Deno.Command(bin!, { args, stdout: "null", stderr: "piped" }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = "";
  while (!err.includes("listening on")) {
    const { value, done } = await reader.read();
    if (done) {
      await child.status;
      await Deno.remove(file).catch(() => {});
      throw new Error(`tcpdump did not start: ${err}`);
    }
    err += value;
  }
  // Keep draining stderr so tcpdump never blocks on it; its last lines count what the kernel dropped.
  const drained = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      err = (err + value).slice(-4096);
    }
  })();
  let stopped = false;
  const halt = async () => {
    if (stopped) return;
    stopped = true;
    try {
      child.kill("SIGINT");
    } catch { /* already gone */ }
    await child.status;
    await drained;
  };
  /** Halts; then refuses an incomplete capture, which could make a test miss a packet that was sent. */
  const haltComplete = async () => {
    await halt();
    const dropped = Number(/(\d+) packets? dropped by kernel/.exec(err)?.[1] ?? 0);
    if (dropped > 0) {
      throw new Error(`tcpdump on ${ifname}: the kernel dropped ${dropped} packets of the capture`);
    }
  };
  return {
    file,
    async stop(fields, displayFilter) {
      await haltComplete();
      const args = [
        "tshark",
        "-r",
        file,
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
      ];
      for (const f of fields) args.push("-e", f);
      if (displayFilter) args.push("-Y", displayFilter);
      const out = await sh(args);
      return out.stdout.split("\n").filter((l) => l.length > 0).map((line) => {
        const values = line.split("\t");
        return Object.fromEntries(fields.map((f, i) => [f, values[i] ?? ""]));
      });
    },
    async waitFrames(count, timeoutMs = 5000) {
      const deadline = performance.now() + scaled(timeoutMs);
      for (;;) {
        const bytes = await Deno.readFile(file);
        if (bytes.length >= 24 && parsePcap(bytes).length >= count) return;
        if (performance.now() > deadline) {
          throw new Error(`capture: fewer than ${count} frames after ${timeoutMs} ms`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async frames() {
      await haltComplete();
      return parsePcap(await Deno.readFile(file));
    },
    async [Symbol.asyncDispose]() {
      await halt();
      await Deno.remove(file).catch(() => {});
    },
  };
}

/** The frames of a classic pcap file (as tcpdump -w writes it), in either byte order. */
export function parsePcap(bytes: Uint8Array): Uint8Array[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = dv.getUint32(0, true);
  const little = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!little && dv.getUint32(0, false) !== 0xa1b2c3d4 && dv.getUint32(0, false) !== 0xa1b23c4d) {
    throw new Error(`not a pcap file (magic 0x${magic.toString(16)})`);
  }
  const frames: Uint8Array[] = [];
  for (let o = 24; o + 16 <= bytes.length;) {
    const captured = dv.getUint32(o + 8, little);
    if (o + 16 + captured > bytes.length) break; // a record still being written
    frames.push(bytes.slice(o + 16, o + 16 + captured));
    o += 16 + captured;
  }
  return frames;
}

/** A captured packet's fields, as `Capture.stop` returns them. */
export type CapturedPacket = Record<string, string>;

/**
 * The TCP data segments from `src` port `sport` (fields ipv6.src, tcp.srcport, tcp.seq, tcp.len), split at
 * relative sequence number `seq`: those ending at or before it, and those starting at or after it.
 */
export function dataSegmentsAround(
  packets: readonly CapturedPacket[],
  src: string,
  sport: number,
  seq: number,
): { before: CapturedPacket[]; after: CapturedPacket[] } {
  const data = packets.filter((p) =>
    p["ipv6.src"] === src && Number(p["tcp.srcport"]) === sport && Number(p["tcp.len"]) > 0
  );
  return {
    before: data.filter((p) => Number(p["tcp.seq"]) + Number(p["tcp.len"]) <= seq),
    after: data.filter((p) => Number(p["tcp.seq"]) >= seq),
  };
}

/** The distinct IPv6 flow labels of the packets (field ipv6.flow, hexadecimal). */
export function flowLabelsOf(packets: readonly CapturedPacket[]): Set<number> {
  return new Set(packets.map((p) => parseInt(p["ipv6.flow"]!, 16)));
}
