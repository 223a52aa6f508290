// sock_diag against real TCP connections: iperf3 across a veth pair (root), and plain loopback sockets.
import assert from "node:assert/strict";
import { hasCommand, privilegedTest } from "../helpers/privileged.ts";
import { createVethPair } from "../helpers/netns.ts";
import { SockDiag, type SockDiagResult, TCP_ESTABLISHED, TCP_LISTEN } from "../../src/net/sock_diag.ts";
import { type Endpoint, IpAddress } from "../../src/net/ip.ts";

const nsPath = (ns: string) => `/run/netns/${ns}`;
const endpoint = (address: string, port: number): Endpoint => ({ address: IpAddress.parse(address), port });
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a value, or fails naming `what`. */
async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(50);
  }
}

/** Child processes that are stopped (and reaped) on dispose, also when the test fails. */
class Children implements AsyncDisposable {
  readonly #children: Deno.ChildProcess[] = [];
  spawn(argv: string[]): Deno.ChildProcess {
    const [cmd, ...args] = argv;
    const child = new Deno.Command(cmd!, { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
    this.#children.push(child);
    return child;
  }
  async [Symbol.asyncDispose](): Promise<void> {
    for (const child of this.#children) {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
      await child.status;
    }
  }
}

function tcp(r: SockDiagResult | undefined): NonNullable<SockDiagResult["tcpInfo"]> {
  assert.ok(r?.tcpInfo, "the socket has tcp_info");
  return r.tcpInfo;
}

privilegedTest(
  "an iperf3 flow across namespaces: rtt, growing bytes_acked, cong name, window scales as ss prints them",
  async () => {
    if (!hasCommand("iperf3") || !hasCommand("ss")) throw new Error("this test needs iperf3 and ss on PATH");
    await using net = await createVethPair();
    // A smaller receive-buffer limit on the client side makes the two window scales differ, so that a
    // swapped pair of nibbles cannot pass unnoticed.
    await net.exec(net.nsA, ["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 131072 262144"]);
    await using children = new Children();
    using diagA = SockDiag.open({ netns: nsPath(net.nsA) });
    using diagB = SockDiag.open({ netns: nsPath(net.nsB) });

    children.spawn([...net.prefix(net.nsB), "iperf3", "-s", "-1", "-p", "5201", "-B", net.ip6B]);
    await waitFor("the iperf3 server to listen", async () => {
      const listening = await diagB.dump({ family: "ipv6", states: 1 << TCP_LISTEN }, { srcPort: 5201 });
      return listening.length > 0 ? true : undefined;
    });
    children.spawn([
      ...net.prefix(net.nsA),
      ...["iperf3", "-c", net.ip6B, "-p", "5201", "--cport", "40001", "-t", "10", "-b", "40M", "-C", "cubic"],
    ]);
    const local = endpoint(net.ip6A, 40001);
    const remote = endpoint(net.ip6B, 5201);

    // The namespace inherits the host's default congestion control (bbr on some hosts), and iperf3's
    // `-C cubic` can land after the first segments: wait for both data and the requested algorithm.
    let lastCong: string | undefined;
    const first = await waitFor("the iperf3 data connection to carry data under cubic", async () => {
      const r = await diagA.lookup(local, remote);
      lastCong = r?.cong?.algorithm;
      return r?.tcpInfo && r.tcpInfo.bytesAcked > 0n && lastCong === "cubic" ? r : undefined;
    }).catch((e) => {
      throw new Error(`${e.message} (last congestion control seen: ${lastCong})`);
    });
    assert.equal(first.socket.state, TCP_ESTABLISHED);
    assert.equal(tcp(first).state, TCP_ESTABLISHED);
    assert.ok(tcp(first).rtt > 0, "rtt is measured");
    assert.equal(first.cong?.algorithm, "cubic");
    assert.equal(first.socket.id.src.toString(), net.ip6A);
    assert.equal(first.socket.id.dstPort, 5201);

    await delay(300);
    const second = await diagA.lookup(local, remote);
    assert.ok(tcp(second).bytesAcked > tcp(first).bytesAcked, "bytes_acked grows while iperf3 sends");
    assert.ok(tcp(second).segsOut > tcp(first).segsOut);

    const ss = await net.exec(net.nsA, [
      "ss",
      "-tineH",
      "src",
      `[${net.ip6A}]:40001`,
      "dst",
      `[${net.ip6B}]:5201`,
    ]);
    const wscale = /wscale:(\d+),(\d+)/.exec(ss.stdout);
    assert.ok(wscale, `ss printed no wscale: ${ss.stdout}`);
    assert.deepEqual([tcp(second).sndWscale, tcp(second).rcvdWscale], [Number(wscale[1]), Number(wscale[2])]);
    assert.notEqual(tcp(second).sndWscale, tcp(second).rcvdWscale, "the setup should give different scales");
    assert.match(ss.stdout, new RegExp(`ino:${second!.socket.iNode}\\b`));
    assert.match(ss.stdout, /\bcubic\b/);

    // The receiving end sees the same pair of scales the other way round.
    const serverSide = await diagB.lookup(remote, local);
    assert.deepEqual([tcp(serverSide).sndWscale, tcp(serverSide).rcvdWscale], [
      tcp(second).rcvdWscale,
      tcp(second).sndWscale,
    ]);
    assert.ok(tcp(serverSide).bytesRecv > 0n, "the server side has received bytes");

    // iperf3 has a control connection to the same server address and port: ports or addresses alone
    // are not enough, the full 5-tuple picks exactly the data connection.
    const toServer = (await diagA.dump({ family: "ipv6" })).filter((r) =>
      r.socket.id.dstPort === 5201 && r.socket.id.dst.toString() === net.ip6B
    );
    assert.ok(toServer.length >= 2, `expected control and data connections, got ${toServer.length}`);
    const exact = await diagA.dump({ family: "ipv6" }, {
      srcPort: 40001,
      dstPort: 5201,
      src: local.address,
      dst: remote.address,
    });
    assert.deepEqual(exact.map((r) => r.socket.iNode), [second!.socket.iNode]);
    assert.equal(await diagA.lookup(local, endpoint(net.ip6B, 5202)), undefined);
  },
);

/** A connected pair on loopback in this process, closed on dispose. */
async function loopbackPair(listenOn: string, connectTo: string) {
  const listener = Deno.listen({ hostname: listenOn, port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const client = await Deno.connect({ hostname: connectTo, port });
  const server = await listener.accept();
  const addr = (a: Deno.Addr) => endpoint((a as Deno.NetAddr).hostname, (a as Deno.NetAddr).port);
  return {
    port,
    client,
    server,
    clientLocal: addr(client.localAddr),
    clientRemote: addr(client.remoteAddr),
    [Symbol.dispose]() {
      client.close();
      server.close();
      listener.close();
    },
  };
}

async function pushBytes(pair: { client: Deno.TcpConn; server: Deno.TcpConn }, n: number): Promise<void> {
  const sink = (async () => {
    const buf = new Uint8Array(65536);
    let got = 0;
    while (got < n) got += (await pair.server.read(buf)) ?? n;
  })();
  await pair.client.write(new Uint8Array(n));
  await sink;
}

Deno.test("loopback: the exact lookup finds this process's connection with live tcp_info", async () => {
  using pair = await loopbackPair("::1", "::1");
  using diag = SockDiag.open();
  await pushBytes(pair, 200_000);
  const before = await diag.lookup(pair.clientLocal, pair.clientRemote);
  assert.equal(before?.socket.id.srcPort, pair.clientLocal.port);
  assert.ok(tcp(before).rtt > 0);
  assert.ok(tcp(before).bytesAcked >= 200_000n);
  const defaultCong = (await Deno.readTextFile("/proc/sys/net/ipv4/tcp_congestion_control")).trim();
  assert.equal(before?.cong?.algorithm, defaultCong);
  assert.ok(before?.skMemInfo && before.skMemInfo.sndBuff > 0);
  await pushBytes(pair, 300_000);
  const after = await diag.lookup(pair.clientLocal, pair.clientRemote);
  assert.ok(tcp(after).bytesAcked >= tcp(before).bytesAcked + 300_000n);
});

Deno.test("loopback: a 5-tuple with no connection finds nothing, though a listener owns the local port", async () => {
  using pair = await loopbackPair("::1", "::1");
  using diag = SockDiag.open();
  // The kernel's exact lookup falls back to the listener on [::1]:port; that must not count as the flow.
  const missing = await diag.lookup(endpoint("::1", pair.port), endpoint("::1", 9));
  assert.equal(missing, undefined);
  const listeners = await diag.dump({ family: "ipv6", states: 1 << TCP_LISTEN }, { srcPort: pair.port });
  assert.equal(listeners.length, 1);
  const connected = await diag.dump({ family: "ipv6", states: 1 << TCP_ESTABLISHED }, { srcPort: pair.port });
  assert.equal(connected.length, 1, "only the server end has the listening port as its local port");
});

Deno.test("loopback: an IPv4 flow is found on a dual-stack IPv6 socket", async () => {
  using pair = await loopbackPair("::", "127.0.0.1");
  using diag = SockDiag.open();
  // The accepted socket is AF_INET6 with IPv4-mapped addresses; the flow is described in IPv4.
  const r = await diag.lookup(endpoint("127.0.0.1", pair.port), endpoint("127.0.0.1", pair.clientLocal.port));
  assert.equal(r?.socket.family, 10);
  assert.equal(r?.socket.id.src.toString(), "::ffff:127.0.0.1");
  assert.equal(r?.socket.id.dstPort, pair.clientLocal.port);
  // And the client end, a plain AF_INET socket.
  const c = await diag.lookup(pair.clientLocal, pair.clientRemote);
  assert.equal(c?.socket.family, 2);
});
