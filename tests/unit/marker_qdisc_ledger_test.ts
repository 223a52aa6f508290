import assert from "node:assert/strict";
import { QdiscLedger } from "../../src/backends/marker/qdisc_ledger.ts";
import { linkLayerOf, unsupportedLinkLayer } from "../../src/backends/marker/link_layer.ts";

Deno.test("marker qdisc ledger: records survive a new instance (a restart), forget removes them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/sub/qdiscs.json`;
    const a = new QdiscLedger(path);
    a.record({ ifname: "eth0", ifindex: 2 });
    a.record({ ifname: "eth0", ifindex: 2 });
    a.record({ ifname: "veth1", ifindex: 7, netns: "/run/netns/x" });
    const b = new QdiscLedger(path);
    assert.equal(b.owns({ ifname: "eth0", ifindex: 2 }), true);
    assert.equal(b.owns({ ifname: "eth0", ifindex: 3 }), false, "same name, other interface");
    assert.equal(b.owns({ ifname: "veth1", ifindex: 7 }), false, "other namespace");
    assert.deepEqual(b.records("/run/netns/x"), [{ ifname: "veth1", ifindex: 7, netns: "/run/netns/x" }]);
    assert.deepEqual(b.records(""), [{ ifname: "eth0", ifindex: 2 }]);
    b.forget({ ifname: "eth0", ifindex: 2 });
    assert.equal(new QdiscLedger(path).owns({ ifname: "eth0", ifindex: 2 }), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("marker qdisc ledger: a record for a reused index or name replaces the stale one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const l = new QdiscLedger(`${dir}/q.json`);
    l.record({ ifname: "eth0", ifindex: 2 });
    l.record({ ifname: "eth9", ifindex: 2 });
    l.record({ ifname: "eth9", ifindex: 5 });
    assert.deepEqual(l.records(), [{ ifname: "eth9", ifindex: 5 }]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("marker qdisc ledger: an unreadable file counts as empty, so no qdisc is wrongly claimed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/q.json`, "{ not json");
    assert.deepEqual(new QdiscLedger(`${dir}/q.json`).records(), []);
    await Deno.writeTextFile(
      `${dir}/q.json`,
      JSON.stringify({ qdiscs: [{ ifname: 3 }, { ifname: "a", ifindex: 4 }] }),
    );
    assert.deepEqual(new QdiscLedger(`${dir}/q.json`).records(), [{ ifname: "a", ifindex: 4 }]);
    const memory = new QdiscLedger(undefined);
    memory.record({ ifname: "x", ifindex: 1 });
    assert.equal(memory.owns({ ifname: "x", ifindex: 1 }), true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("marker link layer: Ethernet-like devices versus headerless ones; others refused by name", () => {
  assert.equal(linkLayerOf(1), "ethernet");
  assert.equal(linkLayerOf(772), "ethernet", "loopback carries an Ethernet header");
  for (const t of [0xfffe, 769, 768, 776, 512, 519]) assert.equal(linkLayerOf(t), "none", `type ${t}`);
  assert.equal(linkLayerOf(32), undefined, "InfiniBand");
  assert.match(unsupportedLinkLayer("ib0", 32), /ib0 has hardware type 32/);
});
