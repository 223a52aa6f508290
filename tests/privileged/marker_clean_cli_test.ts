/**
 * `flowd-go marker clean` as the unit's ExecStopPost uses it: after a daemon killed with SIGKILL left its
 * tc filter (and the clsact qdisc it created) behind, the command removes exactly those, says so, and
 * finds nothing the second time; another program's filter survives.
 */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { flowdCommand, startDaemon } from "../helpers/daemon.ts";

privilegedTest(
  "marker clean: removes what a killed daemon left in tc mode, and only that; idempotent",
  async () => {
    await using net = await createVethPair();
    const dir = await Deno.makeTempDir({ prefix: "flowd-clean-" });
    try {
      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `pidPath: ""\nworkDir: ${dir}\nbackends:\n  marker: {targetInterfaces: [${net.ifB}], attachMode: tc}\n`,
      );
      // A foreign filter on the peer interface of namespace B must survive: put the daemon there.
      {
        await using daemon = await startDaemon(conf, [], { prefix: net.prefix(net.nsB) });
        await daemon.waitForLine(/marker ready/);
        await net.exec(net.nsB, [
          "tc",
          "filter",
          "add",
          "dev",
          net.ifB,
          "ingress",
          "pref",
          "7",
          "protocol",
          "all",
          "u32",
          "match",
          "u32",
          "0",
          "0",
          "classid",
          "1:1",
        ]);
        assert.notEqual(await daemon.stop("SIGKILL"), 0);
      }
      const left = await net.exec(net.nsB, ["tc", "filter", "show", "dev", net.ifB, "egress"]);
      assert.match(left.stdout, /flowd_marker/, "SIGKILL leaves the tc filter behind");

      const clean = async () => {
        const { cmd, args } = flowdCommand(["marker", "clean"]);
        const out = await net.exec(net.nsB, [cmd, ...args], { check: false });
        return out;
      };
      const first = await clean();
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, new RegExp(`removed tcFilter from ${net.ifB}: egress bpf filter`));
      const egress = await net.exec(net.nsB, ["tc", "filter", "show", "dev", net.ifB, "egress"]);
      assert.equal(egress.stdout.trim(), "");
      const ingress = await net.exec(net.nsB, ["tc", "filter", "show", "dev", net.ifB, "ingress"]);
      assert.match(ingress.stdout, /u32/, "the foreign filter is untouched");
      const qdiscs = await net.exec(net.nsB, ["tc", "qdisc", "show", "dev", net.ifB]);
      assert.match(qdiscs.stdout, /clsact/, "the qdisc carries a foreign filter, so it stays");

      const second = await clean();
      assert.equal(second.code, 0);
      assert.equal(second.stdout.trim(), "nothing to clean");

      const unknown = await net.exec(net.nsB, [
        ...Object.values(flowdCommand(["marker", "clean", "--target-interface", "nope0"])).flat(),
      ], {
        check: false,
      });
      assert.equal(unknown.code, 1);
      assert.match(unknown.stdout, /failed on nope0: there is no such interface/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

privilegedTest(
  "marker clean: deletes the clsact qdisc the marker created when nothing else uses it",
  async () => {
    await using net = await createVethPair();
    const dir = await Deno.makeTempDir({ prefix: "flowd-clean-" });
    try {
      const conf = `${dir}/conf.yaml`;
      await Deno.writeTextFile(
        conf,
        `pidPath: ""\nworkDir: ${dir}\nbackends:\n  marker: {targetInterfaces: [${net.ifA}], attachMode: tc}\n`,
      );
      {
        await using daemon = await startDaemon(conf, [], { prefix: net.prefix(net.nsA) });
        await daemon.waitForLine(/marker ready/);
        assert.notEqual(await daemon.stop("SIGKILL"), 0);
      }
      const { cmd, args } = flowdCommand(["marker", "clean", "--target-interface", net.ifA]);
      const out = await net.exec(net.nsA, [cmd, ...args], { check: false });
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /removed tcFilter/);
      assert.match(out.stdout, /removed qdisc from vethA: clsact qdisc created by the marker/);
      const qdiscs = await net.exec(net.nsA, ["tc", "qdisc", "show", "dev", net.ifA]);
      assert.doesNotMatch(qdiscs.stdout, /clsact/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
