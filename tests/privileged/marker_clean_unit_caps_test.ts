/**
 * The unit's clean step as systemd runs it (hardening issue item 4): `ExecStopPost=!flowd-go marker clean`
 * is root limited to the unit's CapabilityBoundingSet, in /run/flowd-go owned by the transient user. It must
 * remove the qdisc the marker created and update the record there, without a write error.
 */
import assert from "node:assert/strict";
import { privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { flowdCommand } from "../helpers/daemon.ts";
import { parseUnit, serviceValue } from "../helpers/unit_sandbox.ts";

const UNIT = new URL("../../systemd/flowd-go.service", import.meta.url).pathname;
const RUN = "/run/flowd-go";
const LEDGER = `${RUN}/marker-qdiscs.json`;

privilegedTest(
  "marker clean: within the unit's bounding set, in a run directory owned by the service user",
  async () => {
    await using net = await createVethPair();
    const unit = parseUnit(await Deno.readTextFile(UNIT));
    assert.match(serviceValue(unit, "ExecStopPost") ?? "", /^!.*marker clean$/);
    const bounding = (serviceValue(unit, "CapabilityBoundingSet") ?? "").split(/\s+/).filter(Boolean)
      .map((c) => `+${c.replace(/^CAP_/, "").toLowerCase()}`);
    // The qdisc a marker run created, and its record, as the daemon (the transient user) wrote it.
    await net.exec(net.nsB, ["tc", "qdisc", "add", "dev", net.ifB, "clsact"]);
    const ifindex = Number(
      (await net.exec(net.nsB, ["cat", `/sys/class/net/${net.ifB}/ifindex`])).stdout.trim(),
    );
    const record = JSON.stringify({ version: 1, qdiscs: [{ ifname: net.ifB, ifindex }] });
    const { cmd, args } = flowdCommand(["marker", "clean"]);
    const q = (s: string) => `'${s.replaceAll("'", `'"'"'`)}'`;
    // A private /run/flowd-go (tmpfs) so the host's is untouched; 61234 stands for the DynamicUser uid.
    const script = [
      `mount -t tmpfs -o mode=0755 flowd-go-run ${RUN}`,
      `chown 61234:61234 ${RUN}`,
      `setpriv --reuid 61234 --regid 61234 --clear-groups sh -c ${q(`printf '%s' ${q(record)} > ${LEDGER}`)}`,
      `exec ip netns exec ${net.nsB} setpriv --inh-caps=-all --bounding-set=-all,${bounding.join(",")} ` +
      [cmd, ...args].map(q).join(" "),
    ].join(" && ");
    await Deno.mkdir(RUN, { recursive: true });
    const out = await new Deno.Command("unshare", {
      args: ["--mount", "--propagation", "private", "sh", "-c", `${script}; echo "ledger: $(cat ${LEDGER})"`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout), stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr + stdout);
    assert.match(stdout, new RegExp(`removed qdisc from ${net.ifB}`), stdout);
    assert.doesNotMatch(stderr, /cannot write the record|Permission denied/, stderr);
    const qdiscs = await net.exec(net.nsB, ["tc", "qdisc", "show", "dev", net.ifB]);
    assert.doesNotMatch(qdiscs.stdout, /clsact/);
  },
);
