/**
 * A Hono app served on loopback for tests, with a gate that handlers can wait on (a server that never
 * answers) and that is opened when the server is disposed, so shutdown never hangs.
 */
import type { Hono } from "hono";

/** A running test server. */
export interface TestHttpServer extends AsyncDisposable {
  readonly port: number;
  /** A URL on this server, e.g. url("/ip") → "http://127.0.0.1:port/ip". */
  url(path: string): string;
  /** Resolves when the server is being disposed; a handler awaiting it "never answers". */
  readonly gate: Promise<void>;
}

/** Serves `build(gate)` on `hostname` (an ephemeral port; loopback in unit tests). */
export function startHttpServer(
  hostname: string,
  build: (gate: Promise<void>) => Hono,
): TestHttpServer {
  let open = () => {};
  const gate = new Promise<void>((r) => open = r);
  const app = build(gate);
  const server = Deno.serve({ hostname, port: 0, onListen: () => {} }, app.fetch);
  const port = server.addr.port;
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  return {
    port,
    gate,
    url: (path) => `http://${host}:${port}${path}`,
    [Symbol.asyncDispose]: async () => {
      open();
      await server.shutdown();
    },
  };
}
