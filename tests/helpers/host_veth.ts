/**
 * A network namespace joined to the host's own namespace by a veth pair, for end-to-end tests where the
 * daemon runs on the host and its TCP peer sits in the namespace. The addresses are a private /64 (and a
 * /24) of their own, directly connected, so traffic never goes anywhere else. `dispose()` deletes the
 * namespace, which deletes both veth ends, also when the test fails.
 */
import { type CommandResult, sh } from "./netns.ts";

/** The host end (`hostIf`, in this namespace) and the peer end (in `ns`). */
export interface HostVeth extends AsyncDisposable {
  readonly ns: string;
  readonly hostIf: string;
  readonly ip6Host: string;
  readonly ip6Peer: string;
  readonly ip4Host: string;
  readonly ip4Peer: string;
  /** The argv prefix to run something in the peer namespace. */
  prefix(): string[];
  exec(cmd: string[]): Promise<CommandResult>;
}

let counter = 0;

/** Creates the namespace and the pair; names and the /64 carry the PID so parallel runs never collide. */
export async function createHostVeth(): Promise<HostVeth> {
  const n = counter++;
  const tag = `${Deno.pid % 100000}x${n}`;
  const ns = `fgP${tag}`, hostIf = `fgh${tag}`, peerIf = `fgp${tag}`;
  const word = ((Deno.pid * 16 + n) % 0xffff).toString(16);
  const ip6Host = `fd00:5ec:7a7:${word}::1`, ip6Peer = `fd00:5ec:7a7:${word}::2`;
  const third = (Deno.pid + n) % 250;
  const ip4Host = `10.214.${third}.1`, ip4Peer = `10.214.${third}.2`;
  const dispose = async () => {
    await sh(["ip", "netns", "del", ns], { check: false });
    await sh(["ip", "link", "del", hostIf], { check: false }); // normally gone with the namespace
  };
  try {
    await sh(["ip", "netns", "add", ns]);
    await sh(["ip", "link", "add", hostIf, "type", "veth", "peer", "name", peerIf, "netns", ns]);
    await sh(["ip", "addr", "add", `${ip6Host}/64`, "dev", hostIf, "nodad"]);
    await sh(["ip", "addr", "add", `${ip4Host}/24`, "dev", hostIf]);
    await sh(["ip", "link", "set", hostIf, "up"]);
    await sh(["ip", "-n", ns, "addr", "add", `${ip6Peer}/64`, "dev", peerIf, "nodad"]);
    await sh(["ip", "-n", ns, "addr", "add", `${ip4Peer}/24`, "dev", peerIf]);
    await sh(["ip", "-n", ns, "link", "set", peerIf, "up"]);
    await sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  } catch (err) {
    await dispose();
    throw err;
  }
  const prefix = () => ["ip", "netns", "exec", ns];
  return {
    ns,
    hostIf,
    ip6Host,
    ip6Peer,
    ip4Host,
    ip4Peer,
    prefix,
    exec: (cmd) => sh([...prefix(), ...cmd]),
    [Symbol.asyncDispose]: dispose,
  };
}
