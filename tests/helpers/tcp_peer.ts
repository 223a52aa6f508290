/**
 * TCP traffic for the connections plugin's tests and bench, run as a child process inside a namespace:
 *
 * - `server ADDR PORT [ADDR PORT ...]`: echo servers ("::" is dual-stack: IPv4 clients arrive
 *   IPv4-mapped, as on a typical XRootD server); prints "listening" once all listen.
 * - `client`: many connections driven line by line from stdin: "open ID SRC DST PORT" (prints
 *   "open ID LOCALPORT"), "send ID BYTES" (prints "echoed ID" once the echo is back), "ping ID COUNT MS"
 *   (one byte, echoed, COUNT times, MS ms apart, 0 for back to back; prints "pinged ID"), "close ID" (prints "closed ID").
 * - `churn DST PORT RATE OPEN SECONDS`: opens RATE connections a second, each closed OPEN seconds after it
 *   was opened (so RATE * OPEN stay open), for SECONDS; prints "ramped" once OPEN seconds have passed
 *   and "churned OPENED CLOSED FAILED" at the end.
 */
import net from "node:net";
import { type LineChild, say, startLineChild, stdinLines } from "./line_child.ts";

async function servers(pairs: string[]): Promise<void> {
  const all: Promise<void>[] = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const server = net.createServer((socket) => {
      socket.on("data", (d: Uint8Array) => socket.write(d));
      socket.on("error", () => {});
    });
    all.push(
      new Promise((resolve) =>
        server.listen(
          { host: pairs[i]!, port: Number(pairs[i + 1]), ipv6Only: pairs[i]!.includes(":") },
          resolve,
        )
      ),
    );
  }
  await Promise.all(all);
  say("listening");
}

/** Sends `bytes` and resolves once as many have come back. */
function echo(socket: net.Socket, bytes: number): Promise<void> {
  return new Promise((resolve) => {
    let got = 0;
    const onData = (d: Uint8Array) => {
      got += d.length;
      if (got >= bytes) {
        socket.off("data", onData);
        resolve();
      }
    };
    socket.on("data", onData);
    socket.write(new Uint8Array(bytes).fill(0x61));
  });
}

async function client(): Promise<void> {
  const sockets = new Map<string, net.Socket>();
  for await (const line of stdinLines()) {
    const [cmd, id, ...a] = line.split(" ");
    if (cmd === "open") {
      const socket = net.connect({ localAddress: a[0]!, host: a[1]!, port: Number(a[2]) });
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      });
      socket.on("error", () => {});
      sockets.set(id!, socket);
      say(`open ${id} ${socket.localPort}`);
    } else if (cmd === "send") {
      await echo(sockets.get(id!)!, Number(a[0]));
      say(`echoed ${id}`);
    } else if (cmd === "ping") {
      const socket = sockets.get(id!)!;
      for (let i = 0; i < Number(a[0]); i++) {
        await echo(socket, 1);
        if (Number(a[1]) > 0) await new Promise((r) => setTimeout(r, Number(a[1])));
      }
      say(`pinged ${id}`);
    } else if (cmd === "close") {
      const socket = sockets.get(id!)!;
      sockets.delete(id!);
      await new Promise<void>((resolve) => {
        socket.once("close", () => resolve());
        socket.end();
      });
      say(`closed ${id}`);
    }
  }
  for (const s of sockets.values()) s.destroy();
}

async function churn(dst: string, port: number, rate: number, openSeconds: number, seconds: number) {
  let opened = 0, closed = 0, failed = 0;
  const t0 = performance.now();
  const total = Math.round(rate * seconds);
  let ramped = false;
  while (opened + failed < total) {
    const due = t0 + ((opened + failed) * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    if (!ramped && performance.now() - t0 >= openSeconds * 1000) {
      ramped = true;
      say("ramped");
    }
    const socket = net.connect({ host: dst, port });
    socket.on("error", () => {
      failed++;
      socket.destroy();
    });
    socket.once("connect", () => {
      opened++;
      setTimeout(() => {
        socket.once("close", () => closed++);
        socket.destroy();
      }, openSeconds * 1000);
    });
    // Connections not yet connected count as opened for the pacing once they are; pace on attempts.
    if (socket.pending) await new Promise((r) => socket.once("connect", r).once("error", r));
  }
  await new Promise((r) => setTimeout(r, openSeconds * 1000 + 500));
  say(`churned ${opened} ${closed} ${failed}`);
}

if (import.meta.main) {
  const [mode, ...a] = Deno.args;
  if (mode === "server") await servers(a);
  else if (mode === "client") await client();
  else if (mode === "churn") await churn(a[0]!, Number(a[1]), Number(a[2]), Number(a[3]), Number(a[4]));
  else throw new Error(`unknown mode ${mode}`);
}

/** A peer process: wait for its lines, send it commands, stop it. */
export type TcpPeer = LineChild;

/** The argv that runs this script with `args` (behind a prefix such as `ip netns exec ns`). */
export function tcpPeerArgv(prefix: string[], args: string[]): string[] {
  return [...prefix, Deno.execPath(), "run", "--allow-all", new URL(import.meta.url).pathname, ...args];
}

/** Starts this script in a namespace. */
export function startTcpPeer(prefix: string[], args: string[]): TcpPeer {
  return startLineChild(tcpPeerArgv(prefix, args), `tcp peer ${args[0]}`);
}
