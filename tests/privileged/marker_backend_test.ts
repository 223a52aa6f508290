/**
 * The marker backend as the daemon drives it: start (load, attach to the configured interfaces), flow
 * events (start inserts, end deletes, IPv4 skipped, matchAll's wildcard flow), stop (everything detached);
 * a start that fails leaves nothing behind.
 */
import assert from "node:assert/strict";
import { BPF_TCX_EGRESS, tcxProgramIds } from "../../ffi/libbpf.ts";
import { inNetworkNamespace } from "../../ffi/libc_socket.ts";
import { MarkerBackend, type MarkerBackendOptions } from "../../src/backends/marker/backend.ts";
import { StartupError } from "../../src/core/errors.ts";
import type { FlowEvent } from "../../src/core/flow_event.ts";
import { IpAddress } from "../../src/net/ip.ts";
import { encodeFlowLabel } from "../../src/scitags/flow_label.ts";
import { createVethPair } from "../helpers/netns.ts";
import { privilegedTest } from "../helpers/privileged.ts";

function event(state: FlowEvent["state"], src: string, sport: number, dst: string, dport: number): FlowEvent {
  const family = IpAddress.parse(src).family;
  return {
    state,
    protocol: "tcp",
    family,
    src: { address: IpAddress.parse(src), port: sport },
    dst: { address: IpAddress.parse(dst), port: dport },
    experimentId: 3,
    activityId: 14,
    application: "test",
  };
}

function config(over: Partial<MarkerBackendOptions["config"]>): MarkerBackendOptions["config"] {
  return {
    targetInterfaces: ["vethA"],
    discoverInterfaces: false,
    removeQdisc: true,
    programPath: "",
    markingStrategy: "label",
    debugMode: false,
    matchAll: false,
    attachMode: "auto",
    ...over,
  };
}

privilegedTest(
  "marker backend: start attaches, flow events fill and empty the map, stop detaches",
  async () => {
    await using net = await createVethPair();
    const dir = await Deno.makeTempDir();
    const netns = `/run/netns/${net.nsA}`;
    const backend = new MarkerBackend({
      config: config({ targetInterfaces: [net.ifA, "lo"] }),
      ledgerPath: `${dir}/q.json`,
      checkIntervalMs: 0,
      netns,
      entropy: () => 0xc0103,
    });
    try {
      await backend.start();
      const program = backend.program!;
      assert.deepEqual(backend.hooks!.attachments().map((a) => [a.ifname, a.kind]), [[net.ifA, "tcx"], [
        "lo",
        "tcx",
      ]]);
      const ifindex = backend.hooks!.attachments()[0]!.ifindex;

      const start = event("start", net.ip6A, 40000, net.ip6B, 5201);
      await backend.handle(start);
      assert.equal(program.flowTag(start), encodeFlowLabel(3, 14, 0xc0103), "label with the drawn entropy");
      await backend.handle(event("ongoing", net.ip6A, 40000, net.ip6B, 5201));
      assert.equal(program.flows().length, 1);

      await backend.handle(event("start", net.ip4A, 40000, net.ip4B, 5201));
      await backend.handle(event("start", `::ffff:${net.ip4A}`, 40000, `::ffff:${net.ip4B}`, 5201));
      assert.equal(backend.stats.skippedIpv4, 2, "IPv4 and IPv4-mapped flows are skipped");
      assert.equal(program.flows().length, 1);

      await backend.handle(event("end", net.ip6A, 40000, net.ip6B, 5201));
      assert.equal(program.flowTag(start), undefined, "end deletes the entry");
      await backend.handle(event("end", net.ip6A, 40000, net.ip6B, 5201));
      assert.deepEqual(backend.stats, {
        inserted: 1,
        deleted: 1,
        skippedIpv4: 2,
        failed: 0,
        evicted: 0,
        refused: 0,
        endsNotMarked: 1,
        failedByErrno: {},
      });

      await backend.stop();
      assert.deepEqual(
        inNetworkNamespace(netns, () => tcxProgramIds(ifindex, BPF_TCX_EGRESS)),
        [],
        "detached",
      );
      await backend.handle(start); // after stop: ignored, no throw
      await backend.stop(); // twice is fine
    } finally {
      await backend.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

privilegedTest(
  "marker backend matchAll: the wildcard flow sets and clears the one tag; other flows are ignored",
  async () => {
    await using net = await createVethPair();
    const dir = await Deno.makeTempDir();
    const backend = new MarkerBackend({
      config: config({ matchAll: true, markingStrategy: "hopByHop", attachMode: "tc" }),
      ledgerPath: `${dir}/q.json`,
      checkIntervalMs: 0,
      netns: `/run/netns/${net.nsA}`,
    });
    try {
      await backend.start();
      const program = backend.program!;
      assert.equal(backend.hooks!.attachments()[0]!.kind, "tc");
      await backend.handle(event("start", net.ip6A, 40000, net.ip6B, 5201));
      assert.equal(program.matchAllTag(), undefined, "an ordinary flow does not set the tag");
      await backend.handle(event("start", "::", 0, "::", 0));
      assert.equal(program.matchAllTag(), 0x00030e, "(3 << 8) | 14");
      await backend.handle(event("end", "::", 0, "::", 0));
      assert.equal(program.matchAllTag(), undefined);
    } finally {
      await backend.stop();
      await Deno.remove(dir, { recursive: true });
    }
    const qdiscs = await net.exec(net.nsA, ["tc", "qdisc", "show", "dev", net.ifA]);
    assert.doesNotMatch(qdiscs.stdout, /clsact/, "the qdisc it created is gone");
  },
);

privilegedTest("marker backend: a failed start names the cause and leaves nothing attached", async () => {
  await using net = await createVethPair();
  const dir = await Deno.makeTempDir();
  const backend = new MarkerBackend({
    config: config({ targetInterfaces: [net.ifA, "nosuch0"], attachMode: "tc" }),
    ledgerPath: `${dir}/q.json`,
    checkIntervalMs: 0,
    netns: `/run/netns/${net.nsA}`,
  });
  try {
    await assert.rejects(backend.start(), (err: unknown) => {
      assert.ok(err instanceof StartupError);
      assert.match(err.message, /^marker: cannot attach the marker to nosuch0: there is no such interface/);
      return true;
    });
    assert.equal(backend.program, undefined);
    const filters = await net.exec(net.nsA, ["tc", "qdisc", "show", "dev", net.ifA]);
    assert.doesNotMatch(filters.stdout, /clsact/, "the first interface's hook and qdisc were undone");
  } finally {
    await backend.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

privilegedTest("marker backend discoverInterfaces: attaches where a public IPv6 address lives", async () => {
  await using net = await createVethPair();
  // A global unicast address outside the private ranges (and not documentation space) makes vethA public.
  await net.exec(net.nsA, ["ip", "addr", "add", "2a02:db8:7::1/64", "dev", net.ifA, "nodad"]);
  const dir = await Deno.makeTempDir();
  const backend = new MarkerBackend({
    config: config({ discoverInterfaces: true, targetInterfaces: ["lo"] }),
    ledgerPath: `${dir}/q.json`,
    checkIntervalMs: 0,
    netns: `/run/netns/${net.nsA}`,
  });
  try {
    await backend.start();
    assert.deepEqual(
      backend.hooks!.attachments().map((a) => a.ifname),
      [net.ifA],
      "lo is replaced by discovery",
    );
  } finally {
    await backend.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
