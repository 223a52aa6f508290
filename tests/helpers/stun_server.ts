/**
 * A STUN server on loopback for tests, built on the npm `stun` package's server: an implementation
 * independent of ours, so the client is checked against someone else's encoder.
 *
 * It answers with the transaction id of the request (the package's example server does not), and
 * reports a configured "public" address instead of the loopback one it sees, as a NAT would.
 */
import dgram from "node:dgram";
import stun from "stun";

/** How the server behaves. */
export type StunServerMode =
  | "xor" // XOR-MAPPED-ADDRESS + FINGERPRINT, as RFC 5389 servers answer
  | "mapped-only" // only the RFC 3489 MAPPED-ADDRESS
  | "error" // a 400 Bad Request error response
  | "other-transaction-first" // an answer with a wrong transaction id first, then the right one
  | "bad-fingerprint-first" // a corrupted answer first, then the right one
  | "silent"; // never answers

/** A running test server. */
export interface TestStunServer extends AsyncDisposable {
  readonly port: number;
  /** "127.0.0.1:port" or "[::1]:port", as configuration takes it. */
  readonly hostPort: string;
  /** Binding requests received, with where they came from. */
  readonly requests: { address: string; port: number }[];
}

interface StunMessage {
  transactionId: Uint8Array;
  addXorAddress(address: string, port: number): void;
  addAddress(address: string, port: number): void;
  addSoftware(name: string): void;
  addError(code: number, reason: string): void;
  addFingerprint(): void;
  toBuffer(): Uint8Array;
}

interface StunServerLike {
  on(event: string, fn: (req: StunMessage, rinfo: dgram.RemoteInfo) => void): void;
  on(event: "error", fn: (err: Error) => void): void;
  close(): void;
}

// The package has no type declarations.
const pkg = stun as unknown as {
  createServer(opts: { type: "udp4" | "udp6"; socket: dgram.Socket }): StunServerLike;
  createMessage(type: number, transactionId?: Uint8Array): StunMessage;
  constants: Record<string, number | string>;
};

/**
 * Starts a server on `address`; `reportAs` is the address put into answers (default: the client's own).
 */
export async function startStunServer(
  address: string,
  opts: { mode?: StunServerMode; reportAs?: string; reportPort?: number } = {},
): Promise<TestStunServer> {
  const mode = opts.mode ?? "xor";
  const v6 = address.includes(":");
  const socket = dgram.createSocket(v6 ? "udp6" : "udp4");
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(0, address, () => resolve());
  });
  const server = pkg.createServer({ type: v6 ? "udp6" : "udp4", socket });
  server.on("error", () => {/* stray non-STUN datagrams */});
  const requests: { address: string; port: number }[] = [];
  const success = Number(pkg.constants.STUN_BINDING_RESPONSE);
  const failure = Number(pkg.constants.STUN_BINDING_ERROR_RESPONSE);
  const send = (msg: StunMessage, rinfo: dgram.RemoteInfo) =>
    socket.send(msg.toBuffer(), rinfo.port, rinfo.address);
  const answer = (req: StunMessage, rinfo: dgram.RemoteInfo, transactionId = req.transactionId) => {
    const msg = pkg.createMessage(success, transactionId);
    const where = opts.reportAs ?? rinfo.address;
    const port = opts.reportPort ?? rinfo.port;
    if (mode === "mapped-only") msg.addAddress(where, port);
    else msg.addXorAddress(where, port);
    msg.addSoftware("test stun server");
    if (mode !== "mapped-only") msg.addFingerprint();
    return msg;
  };
  server.on(String(pkg.constants.STUN_EVENT_BINDING_REQUEST), (req, rinfo) => {
    requests.push({ address: rinfo.address, port: rinfo.port });
    switch (mode) {
      case "silent":
        return;
      case "error": {
        const msg = pkg.createMessage(failure, req.transactionId);
        msg.addError(400, "Bad Request");
        return send(msg, rinfo);
      }
      case "other-transaction-first": {
        const other = new Uint8Array(req.transactionId).map((b) => b ^ 0xff);
        send(answer(req, rinfo, other), rinfo);
        return send(answer(req, rinfo), rinfo);
      }
      case "bad-fingerprint-first": {
        const bytes = answer(req, rinfo).toBuffer();
        bytes[bytes.length - 1]! ^= 0x01;
        socket.send(bytes, rinfo.port, rinfo.address);
        return send(answer(req, rinfo), rinfo);
      }
      default:
        return send(answer(req, rinfo), rinfo);
    }
  });
  const port = socket.address().port;
  return {
    port,
    hostPort: v6 ? `[${address}]:${port}` : `${address}:${port}`,
    requests,
    [Symbol.asyncDispose]: async () => {
      server.close();
      await new Promise<void>((r) => socket.close(() => r()));
    },
  };
}
