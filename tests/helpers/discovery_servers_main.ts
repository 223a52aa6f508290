/**
 * A stand-alone process for network-namespace tests: "what is my address" HTTP services, STUN servers and
 * a UDP collector on the given addresses, reporting on stdout one JSON object per line (ready, every HTTP
 * and STUN client seen, every datagram). Stops on SIGTERM.
 *
 * Usage: deno run -A discovery_servers_main.ts '{"http": [...], "stun": [...], "collector": "::",
 *        "public4": "203.0.114.1", "public6": "2a02:db8::1"}'
 */
import dgram from "node:dgram";
import { Hono } from "hono";
import { startHttpServer, type TestHttpServer } from "./http_server.ts";
import { startStunServer, type TestStunServer } from "./stun_server.ts";

interface Settings {
  http: string[];
  stun: string[];
  collector?: string;
  public4: string;
  public6: string;
}

const settings: Settings = JSON.parse(Deno.args[0] ?? "{}");
const say = (value: unknown) => console.log(JSON.stringify(value));

const https: Record<string, TestHttpServer> = {};
for (const address of settings.http) {
  https[address] = startHttpServer(address, () =>
    new Hono().get("/ip", (c) => {
      const remote = (c.env as { remoteAddr: Deno.NetAddr }).remoteAddr.hostname;
      say({ event: "http", server: address, remote });
      return c.json({ ip: remote.includes(":") ? settings.public6 : settings.public4 });
    }));
}
const stuns: Record<string, TestStunServer> = {};
for (const address of settings.stun) {
  stuns[address] = await startStunServer(address, {
    reportAs: address.includes(":") ? settings.public6 : settings.public4,
  });
}
let collector: dgram.Socket | undefined;
if (settings.collector) {
  const v6 = settings.collector.includes(":");
  collector = dgram.createSocket({ type: v6 ? "udp6" : "udp4", ipv6Only: false });
  await new Promise<void>((r) => collector!.bind(0, settings.collector, () => r()));
  collector.on(
    "message",
    (msg, rinfo) => say({ event: "datagram", from: rinfo.address, text: new TextDecoder().decode(msg) }),
  );
}

const stopped = new Promise<void>((resolve) => Deno.addSignalListener("SIGTERM", () => resolve()));
say({
  event: "ready",
  http: Object.fromEntries(Object.entries(https).map(([a, s]) => [a, s.port])),
  stun: Object.fromEntries(Object.entries(stuns).map(([a, s]) => [a, s.port])),
  collector: collector?.address().port ?? null,
});
// STUN requests are recorded by the server helper; report them when asked to stop.
await stopped;
for (const [address, s] of Object.entries(stuns)) {
  for (const r of s.requests) say({ event: "stun", server: address, remote: r.address });
  await s[Symbol.asyncDispose]();
}
for (const s of Object.values(https)) await s[Symbol.asyncDispose]();
if (collector) await new Promise<void>((r) => collector!.close(() => r()));
say({ event: "stopped" });
Deno.exit(0);
