/**
 * The CLI's end of the control socket: one request, one reply, with errors an operator can act on
 * ("no daemon runs", "not allowed") instead of errno names.
 */
import { errorMessage } from "../core/errors.ts";
import type { ControlCommand, ControlReply } from "./protocol.ts";

/** No daemon listens on the socket (or it is not there). */
export class NoDaemonError extends Error {
  override name = "NoDaemonError";
}

/** Sends one command and returns its result; throws with a plain message when it cannot. */
export async function askDaemon(path: string, command: ControlCommand, timeoutMs = 10_000): Promise<unknown> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.ConnectionRefused) {
      throw new NoDaemonError(`no flowd-go daemon is running (nothing answers on ${path})`);
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new Error(
        `not allowed to connect to ${path}: run as root or as a member of the socket's group`,
      );
    }
    throw new Error(`cannot connect to the control socket ${path}: ${errorMessage(err)}`);
  }
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    await conn.write(new TextEncoder().encode(JSON.stringify({ command }) + "\n"));
    const line = await readLine(conn);
    if (line === undefined) {
      throw new Error(`the daemon closed the control socket without answering ${command}`);
    }
    const reply = JSON.parse(line) as ControlReply;
    if (!reply.ok) throw new Error(reply.error);
    return reply.result;
  } catch (err) {
    if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
      throw new Error(`the daemon did not answer ${command} within ${timeoutMs / 1000} s`);
    }
    throw err;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

async function readLine(conn: Deno.UnixConn): Promise<string | undefined> {
  const decoder = new TextDecoder();
  const buf = new Uint8Array(64 * 1024);
  let text = "";
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return text.length > 0 ? text : undefined;
    text += decoder.decode(buf.subarray(0, n), { stream: true });
    const nl = text.indexOf("\n");
    if (nl >= 0) return text.slice(0, nl);
  }
}
