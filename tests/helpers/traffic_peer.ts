/**
 * Real traffic for namespace tests: a TCP server, a TCP client bound to a chosen source port and driven
 * line by line from the test (so the test can change marking between chunks of one connection), and a
 * UDP sender. Run as a child process inside a namespace (`ip netns exec ...`); `startPeer` does that.
 *
 * Protocol on stdout: one word per event ("listening", "connected", "sent", "got <bytes so far>",
 * "closed <bytes>").
 * Client commands on stdin: "send <bytes>", "close".
 */
import net from "node:net";
import dgram from "node:dgram";
import { type LineChild, say, startLineChild, stdinLines } from "./line_child.ts";

function tcpServer(address: string, port: number): void {
  const server = net.createServer((socket) => {
    let bytes = 0;
    socket.on("data", (d: Uint8Array) => {
      bytes += d.length;
      say(`got ${bytes}`);
    });
    socket.on("close", () => say(`closed ${bytes}`));
    socket.on("error", () => {});
  });
  server.listen({ host: address, port, ipv6Only: true }, () => say("listening"));
}

async function tcpClient(src: string, sport: number, dst: string, dport: number): Promise<void> {
  const socket = net.connect({ host: dst, port: dport, localAddress: src, localPort: sport, family: 6 });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  say("connected");
  for await (const line of stdinLines()) {
    const [cmd, arg] = line.split(" ");
    if (cmd === "send") {
      const data = new Uint8Array(Number(arg)).fill(0x61);
      await new Promise<void>((resolve) => socket.write(data, () => resolve()));
      say("sent");
    } else if (cmd === "close") {
      break;
    }
  }
  await new Promise<void>((resolve) => {
    socket.once("close", () => resolve());
    socket.end();
  });
  say("closed 0");
}

async function udpSend(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  sizes: number[],
): Promise<void> {
  const socket = dgram.createSocket({ type: "udp6" });
  await new Promise<void>((resolve) => socket.bind({ address: src, port: sport }, () => resolve()));
  for (const size of sizes) {
    await new Promise<void>((resolve, reject) =>
      socket.send(new Uint8Array(size).fill(0x75), dport, dst, (err) => err ? reject(err) : resolve())
    );
  }
  socket.close();
  say("sent");
}

if (import.meta.main) {
  const [mode, ...a] = Deno.args;
  if (mode === "tcp-server") tcpServer(a[0]!, Number(a[1]));
  else if (mode === "tcp-client") await tcpClient(a[0]!, Number(a[1]), a[2]!, Number(a[3]));
  else if (mode === "udp-send") {
    await udpSend(a[0]!, Number(a[1]), a[2]!, Number(a[3]), a.slice(4).map(Number));
  } else throw new Error(`unknown mode ${mode}`);
}

/** A peer process: wait for its events, send it commands, stop it. */
export type Peer = LineChild;

/** Starts this script in a network namespace (argv prefix such as `ip netns exec ns`). */
export function startPeer(prefix: string[], args: string[]): Peer {
  const argv = [...prefix, Deno.execPath(), "run", "--allow-all", new URL(import.meta.url).pathname, ...args];
  return startLineChild(argv, `peer ${args.join(" ")}`);
}
