/**
 * A marker that attaches, registers one flow, says "attached <program id>" and then waits to be killed:
 * run as a separate process by tests that simulate a crash (SIGKILL) and look at what it left behind.
 *
 * Arguments: <netns path> <interface> <tcx|tc> <ledger path> <flow: src,sport,dst,dport> <tag>
 */
import { MarkerHooks } from "../../src/backends/marker/hooks.ts";
import { MarkerProgram } from "../../src/backends/marker/program.ts";
import { QdiscLedger } from "../../src/backends/marker/qdisc_ledger.ts";
import { IpAddress } from "../../src/net/ip.ts";

const [netns, ifname, mode, ledgerPath, flow, tag] = Deno.args;
const [src, sport, dst, dport] = flow!.split(",");
const program = await MarkerProgram.load({ strategy: "label", matchAll: false, debug: false });
const hooks = new MarkerHooks(program, {
  mode: mode as "tcx" | "tc",
  removeQdisc: true,
  ledger: new QdiscLedger(ledgerPath),
  netns,
});
await hooks.attach(ifname!);
program.setFlow({
  protocol: "udp",
  src: { address: IpAddress.parse(src!), port: Number(sport) },
  dst: { address: IpAddress.parse(dst!), port: Number(dport) },
}, Number(tag));
console.log(`attached ${program.programId("ethernet")}`);
setInterval(() => {}, 60_000);
