/**
 * Connecting to NATS, shared by the nats backend and plugin: the servers list, reconnecting for ever
 * with back-off, TLS (CA file, client certificate and key), and one of user + password file, token file
 * or credentials file. Secrets come only from files, are read at start and never logged. A first
 * connection that fails is explained in one line: refused credentials, refused TLS, or no server reached.
 */
import {
  connect,
  credsAuthenticator,
  errors,
  type NatsConnection,
  type NodeConnectionOptions,
} from "@nats-io/transport-node";
import net from "node:net";
import tls from "node:tls";
import { errorMessage, StartupError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";

/** The connection keys of `backends.nats` and `plugins.nats` (paths already resolved against workDir). */
export interface NatsConnectionSettings {
  servers: readonly string[];
  user?: string;
  passwordFile?: string;
  tokenFile?: string;
  credsFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** Seconds a first connection may take before start fails. */
  connectTimeout: number;
}

/** A first connection that failed, and why (the nats backend waits out "unreachable", not the others). */
export class NatsConnectError extends StartupError {
  constructor(
    message: string,
    readonly kind: "auth" | "tls" | "unreachable" | "other",
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "NatsConnectError";
  }
}

/** Back-off between reconnect attempts: base wait, and up to this much random extra. */
const RECONNECT_WAIT_MS = 500;
const RECONNECT_JITTER_MS = 1000;

/**
 * The client library tears a socket down with removeAllListeners() then destroy(); under Deno's node
 * layer a reset already on its way (the server closing after "Authorization Violation", a node killed)
 * is then emitted as an 'error' with no listener, which would end the daemon. A socket whose listeners
 * were all removed keeps one that ignores errors: nobody is left to act on them.
 */
let socketGuardInstalled = false;
function guardDetachedSockets(): void {
  if (socketGuardInstalled) return;
  socketGuardInstalled = true;
  const proto = net.Socket.prototype as unknown as {
    removeAllListeners(this: net.Socket, ...args: unknown[]): net.Socket;
  };
  const original = proto.removeAllListeners;
  proto.removeAllListeners = function (this: net.Socket, ...args: unknown[]) {
    const result = original.apply(this, args);
    if (args.length === 0 || args[0] === "error") this.on("error", ignore);
    return result;
  };
}
const ignore = () => {};

/** Reads a secret file: trimmed, non-empty, or a StartupError naming the key and the file. */
async function readSecret(key: string, path: string): Promise<string> {
  let text;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new StartupError(`cannot read ${key} ${path}: ${errorMessage(err)}`);
  }
  const value = text.trim();
  if (!value) throw new StartupError(`${key} ${path} is empty`);
  return value;
}

/** The client's options for these settings, secrets read from their files. */
export async function natsConnectOptions(
  s: NatsConnectionSettings,
  name: string,
): Promise<NodeConnectionOptions> {
  const o: NodeConnectionOptions = {
    servers: [...s.servers],
    name,
    timeout: s.connectTimeout * 1000,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: RECONNECT_WAIT_MS,
    reconnectJitter: RECONNECT_JITTER_MS,
    reconnectJitterTLS: RECONNECT_JITTER_MS,
    // The nodes the cluster announces are joined to the list: a fleet config may name one seed server.
    ignoreClusterUpdates: false,
  };
  if (s.user !== undefined) {
    o.user = s.user;
    if (s.passwordFile !== undefined) o.pass = await readSecret("passwordFile", s.passwordFile);
  }
  if (s.tokenFile !== undefined) o.token = await readSecret("tokenFile", s.tokenFile);
  if (s.credsFile !== undefined) {
    o.authenticator = credsAuthenticator(
      new TextEncoder().encode(await readSecret("credsFile", s.credsFile)),
    );
  }
  if (s.tls) {
    for (const [key, path] of Object.entries(s.tls)) {
      if (path === undefined) continue;
      try {
        await Deno.stat(path);
      } catch (err) {
        throw new StartupError(`cannot read tls.${key} ${path}: ${errorMessage(err)}`);
      }
    }
    o.tls = {
      ...(s.tls.caFile ? { caFile: s.tls.caFile } : {}),
      ...(s.tls.certFile ? { certFile: s.tls.certFile } : {}),
      ...(s.tls.keyFile ? { keyFile: s.tls.keyFile } : {}),
    };
  }
  return o;
}

/** What went wrong with a connection attempt, in words an operator can act on. */
export function classifyNatsError(
  err: unknown,
): { kind: "auth" | "tls" | "unreachable" | "other"; text: string } {
  const chain: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && depth < 5; depth++) {
    chain.push(errorMessage(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  const text = chain.join(": ");
  const lower = text.toLowerCase();
  if (
    err instanceof errors.AuthorizationError || err instanceof errors.UserAuthenticationExpiredError ||
    lower.includes("authorization violation") || lower.includes("authentication")
  ) {
    return { kind: "auth", text: `the server refused the credentials (${text})` };
  }
  if (
    lower.includes("tls") || lower.includes("ssl") || lower.includes("certificate") ||
    lower.includes("handshake") || lower.includes("econnreset") || lower.includes("alert")
  ) {
    return { kind: "tls", text: `the TLS handshake failed (${text})` };
  }
  if (
    lower.includes("econnrefused") || lower.includes("connection refused") || lower.includes("timeout") ||
    lower.includes("enotfound") || lower.includes("ehostunreach") || lower.includes("connection_refused")
  ) {
    return { kind: "unreachable", text: `no server could be reached (${text})` };
  }
  return { kind: "other", text };
}

/**
 * Connects (the first connection must succeed, so a wrong password fails the start, not the first
 * publish) and logs disconnects and reconnects from then on.
 */
export async function openNatsConnection(
  s: NatsConnectionSettings,
  name: string,
  log: Logger,
  slot: string,
  onConnected?: (connected: boolean) => void,
): Promise<NatsConnection> {
  const options = await natsConnectOptions(s, name);
  guardDetachedSockets();
  let nc: NatsConnection;
  try {
    nc = await connect(options);
  } catch (err) {
    let c = classifyNatsError(err);
    if (c.kind !== "auth" && s.tls) {
      // The server drops a client whose certificate it refuses without a word the client library
      // passes on (it times out): one handshake of our own says what happened.
      const refusal = await tlsRefusal(s.servers, s.tls, s.connectTimeout * 1000);
      if (refusal) c = { kind: "tls", text: `the TLS handshake failed (${refusal})` };
    }
    throw new NatsConnectError(`${slot}: cannot connect to ${s.servers.join(",")}: ${c.text}`, c.kind, {
      cause: err,
    });
  }
  log.info("connected to NATS", { server: nc.getServer(), slot });
  (async () => {
    for await (const st of nc.status()) {
      if (st.type === "disconnect") {
        onConnected?.(false);
        log.warn("disconnected from NATS; reconnecting", { server: st.server });
      } else if (st.type === "reconnect") {
        onConnected?.(true);
        log.info("reconnected to NATS", { server: st.server });
      } else if (st.type === "error") {
        log.warn("NATS connection error", { err: classifyNatsError(st.error).text });
      }
    }
  })().catch(() => {});
  return nc;
}

/**
 * Goes through NATS's plaintext INFO line and a TLS handshake with the configured files against the first
 * server that answers, and returns the TLS error (a refused client certificate shows as an alert read
 * after the handshake), or undefined when the handshake held or no server answered.
 */
async function tlsRefusal(
  servers: readonly string[],
  files: NonNullable<NatsConnectionSettings["tls"]>,
  timeoutMs: number,
): Promise<string | undefined> {
  const read = (path: string | undefined) => path === undefined ? undefined : Deno.readTextFileSync(path);
  let ca, cert, key;
  try {
    ca = read(files.caFile);
    cert = read(files.certFile);
    key = read(files.keyFile);
  } catch (err) {
    return `cannot read the TLS files: ${errorMessage(err)}`;
  }
  for (const server of servers) {
    let url: URL;
    try {
      url = new URL(server.includes("://") ? server : `nats://${server}`);
    } catch {
      continue;
    }
    const host = url.hostname.replace(/^\[|\]$/g, ""), port = Number(url.port || 4222);
    const outcome = await new Promise<string | undefined>((resolve) => {
      const socket = net.connect({ host, port });
      let secure: tls.TLSSocket | undefined;
      const done = (r: string | undefined) => {
        clearTimeout(timer);
        secure?.destroy();
        socket.destroy();
        resolve(r);
      };
      const timer = setTimeout(() => done(undefined), Math.min(timeoutMs, 3000));
      socket.on("error", () => done(undefined));
      socket.once("data", () => {
        secure = tls.connect({
          socket,
          ca,
          cert,
          key,
          servername: host === "127.0.0.1" ? "localhost" : host,
        });
        secure.on("error", (err) => {
          const text = errorMessage(err);
          done(/alert/i.test(text) ? `the server refused the client certificate: ${text}` : text);
        });
        // The server's verdict on our certificate comes after our side of the handshake (TLS 1.3).
        secure.once("secureConnect", () => setTimeout(() => done(undefined), 500));
      });
    });
    if (outcome !== undefined) return outcome;
  }
  return undefined;
}

/** Milliseconds between connection tries while the cluster was not reachable at start. */
export const CONNECT_RETRY_MS = 2000;

/**
 * The pause between connection tries, which a stop can cut short (so a stopping component does not wait
 * out the rest of a retry interval).
 */
export class RetryPause {
  #wake: (() => void) | undefined;

  constructor(readonly ms = CONNECT_RETRY_MS) {}

  /** Resolves after `ms`, or at once when `wake` is called meanwhile. */
  wait(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, this.ms);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
  }

  /** Ends the pause in progress, if any. */
  wake(): void {
    this.#wake?.();
  }
}
