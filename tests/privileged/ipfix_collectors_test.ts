/**
 * IPFIX export checked by real collectors: the daemon marks a real TCP flow on namespace A's veth and
 * exports it to nfdump's nfcapd and pmacct's nfacctd, both listening on A's loopback, while tcpdump
 * captures the export for tshark to decode (cflow dissector, every field, no malformed-packet or other
 * expert warnings). The records must add up to what the receiver counted (plus headers), carry the flow
 * label that was on the wire, give active-timeout records while the flow lasts and one final record at
 * its end event; nfacctd restarted mid-flow must get the templates again and decode later records.
 */
import assert from "node:assert/strict";
import { hasCommand, privilegedTest } from "../helpers/privileged.ts";
import { createVethPair, sh, type VethPair } from "../helpers/netns.ts";
import { type Daemon, runFlowd, startDaemon, superviseProcess } from "../helpers/daemon.ts";
import type { StatusReport } from "../../src/control/status_report.ts";
import { startPeer } from "../helpers/traffic_peer.ts";
import { startCapture } from "../helpers/packet_capture.ts";
import { decodeFlowLabel } from "../../src/scitags/flow_label.ts";

const SERVER_PORT = 5201;
const CLIENT_PORT = 40001;
const NFCAPD_PORT = 4739;
const NFACCTD_PORT = 4740;
const PEN = 32473;
const REFUSED_PORT = 4741;
const COLLECTORS = ["nfcapd", "nfdump", "nfacctd", "tshark", "tcpdump"];

async function writePipe(path: string, line: string): Promise<void> {
  const f = await Deno.open(path, { write: true });
  await f.write(new TextEncoder().encode(line + "\n"));
  f.close();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Children of a process, by pid (pmacct forks a process per plugin). */
async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
    const text = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/children`).catch(() => "");
    out.push(...text.split(/\s+/).filter((x) => x).map(Number));
  }
  return out;
}

/** SIGTERM, then SIGKILL to it and its plugin processes if it has not exited within `graceMs`. */
async function stopCollector(p: Daemon, graceMs = 8000): Promise<void> {
  const pid = p.process.pid;
  const children = await childrenOf(pid).catch(() => []);
  const timer = setTimeout(() => {
    for (const c of [pid, ...children]) {
      try {
        Deno.kill(c, "SIGKILL");
      } catch { /* gone */ }
    }
  }, graceMs);
  try {
    await p.stop("SIGTERM");
  } finally {
    clearTimeout(timer);
  }
  for (const c of children) {
    try {
      Deno.kill(c, "SIGKILL");
    } catch { /* gone */ }
  }
}

/** nfacctd on A's loopback printing every record as a JSON line, with the flow label and SciTags ids. */
async function startNfacctd(net: VethPair, dir: string, tag: string): Promise<Daemon> {
  await Deno.writeTextFile(
    `${dir}/primitives`,
    `name=flow_label field_type=31 len=4 semantics=u_int
name=scitags_experiment field_type=${PEN}:1 len=4 semantics=u_int
name=scitags_activity field_type=${PEN}:2 len=4 semantics=u_int
name=end_reason field_type=136 len=1 semantics=u_int
`,
  );
  await Deno.writeTextFile(
    `${dir}/nfacctd-${tag}.conf`,
    `daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: ${NFACCTD_PORT}
nfacctd_time_new: true
aggregate_primitives: ${dir}/primitives
plugins: print[json]
aggregate[json]: src_host, dst_host, src_port, dst_port, proto, flow_label, scitags_experiment, scitags_activity, end_reason
print_output[json]: json
print_output_file[json]: ${dir}/nfacctd-${tag}.json
print_output_file_append[json]: true
print_refresh_time[json]: 1
logfile: ${dir}/nfacctd-${tag}.log
`,
  );
  const p = superviseProcess(net.prefix(net.nsA)[0]!, [
    ...net.prefix(net.nsA).slice(1),
    "nfacctd",
    "-f",
    `${dir}/nfacctd-${tag}.conf`,
  ]);
  // Listening once its log says so.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const log = await Deno.readTextFile(`${dir}/nfacctd-${tag}.log`).catch(() => "");
    if (/waiting for NetFlow\/IPFIX data/i.test(log)) return p;
    if (Date.now() > deadline) {
      await p[Symbol.asyncDispose]();
      throw new Error(`nfacctd did not start: ${log}`);
    }
    await sleep(50);
  }
}

/** Every JSON line nfacctd printed (its print plugin appends one per aggregate and refresh). */
async function nfacctdLines(file: string): Promise<Array<Record<string, unknown>>> {
  const text = await Deno.readTextFile(file).catch(() => "");
  return text.split("\n").filter((l) => l.trim().startsWith("{")).map((l) => JSON.parse(l));
}

privilegedTest(
  "ipfix: a marked TCP flow in nfdump, nfacctd and tshark, exact counts and flow label",
  async () => {
    const missing = COLLECTORS.filter((c) => !hasCommand(c));
    if (missing.length) {
      console.warn(`SKIPPED (needs ${missing.join(", ")}: bash scripts/setup.sh installs them)`);
      return;
    }
    await using net = await createVethPair();
    const dir = await Deno.makeTempDir({ prefix: "flowd-ipfix-" });
    try {
      await Deno.mkdir(`${dir}/nf`);
      await sh(["ip", "-n", net.nsA, "link", "set", "lo", "up"]);
      const ifindexA =
        JSON.parse((await net.exec(net.nsA, ["ip", "-j", "link", "show", net.ifA])).stdout)[0].ifindex;
      await using capture = await startCapture(net.prefix(net.nsA), "lo", [
        "udp",
        "port",
        String(NFCAPD_PORT),
      ]);
      await using nfcapd = superviseProcess(net.prefix(net.nsA)[0]!, [
        ...net.prefix(net.nsA).slice(1),
        "nfcapd",
        "-w",
        `${dir}/nf`,
        "-p",
        String(NFCAPD_PORT),
        "-b",
        "127.0.0.1",
        "-t",
        "3600",
      ]);
      let nfacctd = await startNfacctd(net, dir, "1");
      let received = 0;
      let wire: Awaited<ReturnType<typeof startCapture>> | undefined;
      try {
        const conf = `${dir}/conf.yaml`;
        await Deno.writeTextFile(
          conf,
          `pidPath: ""
workDir: ${dir}
controlSocket: ${dir}/control.sock
plugins:
  namedPipe: {pipePath: np, pipeMode: "0600"}
backends:
  marker:
    targetInterfaces: [${net.ifA}]
  ipfix:
    collectors:
      - {address: 127.0.0.1, port: ${NFCAPD_PORT}}
      - {address: localhost, port: ${NFACCTD_PORT}, transport: udp}
      - {address: 127.0.0.1, port: ${REFUSED_PORT}, transport: tcp} # nobody listens: marking goes on
    observationDomainId: 42
    activeTimeout: 1
    templateRefresh: 1
    privateEnterpriseNumber: ${PEN}
`,
        );
        await using daemon = await startDaemon(conf, [], { prefix: net.prefix(net.nsA) });
        await daemon.waitForLine(/ipfix exporter ready/);
        await using server = startPeer(net.prefix(net.nsB), ["tcp-server", net.ip6B, String(SERVER_PORT)]);
        wire = await startCapture(net.prefix(net.nsB), net.ifB, [
          "ip6",
          "and",
          "tcp",
          "src",
          "port",
          String(CLIENT_PORT),
        ]);
        await server.expect("listening");
        await writePipe(`${dir}/np`, `start tcp ${net.ip6A} ${CLIENT_PORT} ${net.ip6B} ${SERVER_PORT} 2 9`);
        await daemon.waitForLine(/marking flow/);
        await using client = startPeer(net.prefix(net.nsA), [
          "tcp-client",
          net.ip6A,
          String(CLIENT_PORT),
          net.ip6B,
          String(SERVER_PORT),
        ]);
        await client.expect("connected");
        const send = async (n: number) => {
          await client.send(`send ${n}`);
          received += n;
          await server.expect("got", 10_000, (l) => Number(l.split(" ")[1]) >= received);
        };
        // A long flow: data in three bursts over ~4 s, so active-timeout records come between them.
        await send(300_000);
        await sleep(1500);
        // nfacctd restarts mid-flow: the new one learns the templates from the next refresh.
        await nfacctd.stop("SIGTERM");
        nfacctd = await startNfacctd(net, dir, "2");
        await send(200_000);
        await sleep(1500);
        await send(100_000);
        await client.send("close");
        await client.expect("closed");
        await sleep(300);
        await writePipe(`${dir}/np`, `end tcp ${net.ip6A} ${CLIENT_PORT} ${net.ip6B} ${SERVER_PORT} 2 9`);
        await daemon.waitForLine(/stopped marking flow/);
        await sleep(1500); // the final record, and nfacctd's next print
        // status: the exporter's counters per collector; the refused TCP one makes it degraded.
        const st = await runFlowd(["status", "--socket", `${dir}/control.sock`, "--format", "json"]);
        const ipfix = (JSON.parse(st.stdout) as StatusReport).components.find((c) => c.name === "ipfix")!;
        assert.equal(ipfix.state, "degraded", st.stdout);
        const counter = (collector: string, outcome: string) =>
          ipfix.counters.find((m) =>
            m.name === "flowd_ipfix_records_total" && m.labels?.collector === collector &&
            m.labels?.outcome === outcome
          )?.value;
        assert.ok(counter(`udp:127.0.0.1:${NFCAPD_PORT}`, "sent")! >= 3, st.stdout);
        assert.equal(counter(`udp:127.0.0.1:${NFCAPD_PORT}`, "failed"), 0);
        assert.ok(counter(`tcp:127.0.0.1:${REFUSED_PORT}`, "failed")! >= 3, st.stdout);
        assert.equal(await daemon.stop("SIGTERM"), 0, daemon.lines.join("\n"));
      } finally {
        await sleep(1200);
        await stopCollector(nfacctd).catch(() => {});
      }
      await stopCollector(nfcapd);
      await capture.frames();

      // tshark: every field decoded, nothing malformed, no expert warnings.
      const decode = (extra: string[]) =>
        sh(["tshark", "-r", capture.file, "-d", `udp.port==${NFCAPD_PORT},cflow`, ...extra]);
      const verbose = (await decode(["-V"])).stdout;
      assert.doesNotMatch(verbose, /Malformed|\[Expert Info \((Warning|Error)/, verbose.slice(0, 4000));
      assert.match(
        verbose,
        /Enterprise Private entry: \(Example Enterprise Number for Documentation Use\) Type 1: Value \(hex bytes\): 00 00 00 02/,
        "the experiment id under the PEN",
      );
      const expert = (await decode(["-q", "-z", "expert,warn"])).stdout;
      assert.doesNotMatch(expert, /Warns \(|Errors \(/, expert);
      const fields = [
        "cflow.srcaddrv6",
        "cflow.dstaddrv6",
        "cflow.srcport",
        "cflow.dstport",
        "cflow.protocol",
        "cflow.ipv6flowlabel",
        "cflow.octets",
        "cflow.packets",
        "cflow.flow_end_reason",
        "cflow.abstimestart",
        "cflow.abstimeend",
        "cflow.od_id",
        "cflow.sequence",
        "cflow.outputint",
      ];
      const rows = (await decode([
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
        "-Y",
        "cflow.srcaddrv6",
        ...fields.flatMap((f) => ["-e", f]),
      ])).stdout
        .split("\n").filter((l) => l).map((l) => l.split("\t"));
      console.log("tshark, first record message:", rows[0]?.join(" | "));
      const records: Array<Record<string, string>> = [];
      for (const row of rows) {
        const cols = row.map((c) => c.split(";"));
        const n = cols[0]!.length;
        for (let i = 0; i < n; i++) {
          records.push(
            Object.fromEntries(fields.map((f, j) => [f, cols[j]![Math.min(i, cols[j]!.length - 1)]!])),
          );
        }
      }
      const onWire = await wire!.stop(["ipv6.flow", "tcp.len"]);
      await wire![Symbol.asyncDispose]();
      const wireLabels = [
        ...new Set(onWire.filter((p) => Number(p["tcp.len"]) > 0).map((p) => parseInt(p["ipv6.flow"]!, 16))),
      ];
      assert.equal(wireLabels.length, 1, `one label on the wire: ${wireLabels}`);
      const ours = records.filter((r) => r["cflow.srcport"] === String(CLIENT_PORT));
      assert.ok(ours.length >= 3, `records of the flow: ${JSON.stringify(records)}`);
      for (const r of ours) {
        assert.equal(r["cflow.srcaddrv6"], net.ip6A);
        assert.equal(r["cflow.dstaddrv6"], net.ip6B);
        assert.equal(r["cflow.dstport"], String(SERVER_PORT));
        assert.equal(r["cflow.protocol"], "6");
        assert.equal(r["cflow.od_id"], "42");
        assert.equal(r["cflow.outputint"], String(ifindexA), "the marked veth's ifindex");
        assert.deepEqual(r["cflow.ipv6flowlabel"], String(wireLabels[0]), "the label on the wire");
        const label = decodeFlowLabel(Number(r["cflow.ipv6flowlabel"]));
        assert.deepEqual([label.experimentId, label.activityId], [2, 9], "the flow label as marked");
      }
      assert.equal(new Set(ours.map((r) => r["cflow.abstimestart"])).size, 1, "one start time for the flow");
      const reasons = ours.map((r) => Number(r["cflow.flow_end_reason"]));
      assert.ok(reasons.filter((x) => x === 2).length >= 2, `active-timeout records: ${reasons}`);
      assert.equal(reasons.filter((x) => x === 3).length, 1, `one end-of-flow record: ${reasons}`);
      assert.equal(reasons.at(-1), 3, "the end-of-flow record comes last");
      const packets = ours.reduce((s, r) => s + Number(r["cflow.packets"]), 0);
      const bytes = ours.reduce((s, r) => s + Number(r["cflow.octets"]), 0);
      // The marker counts the bytes of what leaves: payload plus headers (Ethernet 14 + IPv6 40 + TCP 20..40),
      // once per GSO packet of many segments, so at most 94 bytes per counted segment above the payload.
      assert.ok(
        bytes > received && bytes <= received + packets * 94,
        `${bytes} bytes in ${packets} packets for ${received} received`,
      );

      // nfdump: the same flow, packets and bytes.
      const nf = await sh([
        "nfdump",
        "-R",
        `${dir}/nf`,
        "-q",
        "-N",
        "-o",
        "fmt:%sa|%da|%sp|%dp|%pr|%pkt|%byt",
      ]);
      const files = [...Deno.readDirSync(`${dir}/nf`)].map((e) => e.name).filter((n) =>
        n.startsWith("nfcapd.2")
      );
      console.log((await sh(["nfdump", "-r", `${dir}/nf/${files[0]}`, "-o", "long"])).stdout);
      const flowBlock = verbose.slice(verbose.indexOf("        Flow 1"));
      console.log(flowBlock.slice(0, flowBlock.indexOf("Padding")));
      console.log("nfdump -R:", nf.stdout.trim().split("\n").slice(0, 2).join(" // "));
      const nfRows = nf.stdout.split("\n").map((l) => l.split("|").map((c) => c.trim())).filter((c) =>
        c[2] === String(CLIENT_PORT)
      );
      assert.equal(nfRows.length, ours.length, nf.stdout);
      for (const c of nfRows) {
        assert.deepEqual(c.slice(0, 5), [
          net.ip6A,
          net.ip6B,
          String(CLIENT_PORT),
          String(SERVER_PORT),
          "6",
        ]);
      }
      assert.equal(nfRows.reduce((s, c) => s + Number(c[5]), 0), packets);
      assert.equal(nfRows.reduce((s, c) => s + Number(c[6]), 0), bytes);

      // nfacctd (the second instance got the templates again and decoded what followed).
      const first = await nfacctdLines(`${dir}/nfacctd-1.json`);
      const second = await nfacctdLines(`${dir}/nfacctd-2.json`);
      console.log("nfacctd:", JSON.stringify(second[0]));
      const flowOf = (l: Record<string, unknown>) => l.port_src === CLIENT_PORT && l.ip_src === net.ip6A;
      assert.ok(first.some(flowOf), JSON.stringify(first));
      const later = second.filter(flowOf);
      assert.ok(later.length > 0, `nfacctd after its restart: ${JSON.stringify(second)}`);
      for (const l of [...first.filter(flowOf), ...later]) {
        assert.equal(l.ip_dst, net.ip6B);
        assert.equal(l.port_dst, SERVER_PORT);
        assert.equal(l.ip_proto, "tcp");
        assert.equal(Number(l.scitags_experiment), 2, "custom primitive from the enterprise element");
        assert.equal(Number(l.scitags_activity), 9);
        assert.equal(Number(l.flow_label), Number(ours[0]!["cflow.ipv6flowlabel"]));
      }
      const pmBytes = [...first, ...second].filter(flowOf).reduce((s, l) => s + Number(l.bytes), 0);
      assert.ok(pmBytes <= bytes && pmBytes > 0, `nfacctd bytes ${pmBytes} of ${bytes}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
