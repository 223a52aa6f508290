/**
 * The control socket's protocol (version 1): a local unix stream socket, one JSON object per line each way.
 *
 * Request:  {"command": "flows"}            (optionally "id": any JSON value, echoed back)
 * Reply:    {"ok": true, "command": "flows", "result": {...}}
 *           {"ok": false, "error": "unknown command \"x\"; known: flows, ping, status"}
 *
 * A client may send several requests on one connection; replies come in order. A line that is not a JSON
 * object, or is longer than MAX_REQUEST_BYTES, gets an error reply (the connection stays usable, except
 * after an over-long line, which closes it). Never on the network: the socket file's mode and group decide
 * who may connect.
 */

/** The commands a daemon answers. */
export const CONTROL_COMMANDS = ["ping", "flows", "status"] as const;
export type ControlCommand = typeof CONTROL_COMMANDS[number];

/** Longest request line accepted. */
export const MAX_REQUEST_BYTES = 64 * 1024;

export interface ControlRequest {
  readonly command: ControlCommand;
  readonly id?: unknown;
}

export type ControlReply =
  | { readonly ok: true; readonly command: ControlCommand; readonly id?: unknown; readonly result: unknown }
  | { readonly ok: false; readonly id?: unknown; readonly error: string };

/** Parses one request line; a string is the error to reply with. */
export function parseRequest(line: string): ControlRequest | string {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    return `the request is not JSON: ${err instanceof Error ? err.message : String(err)}`;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return 'the request must be a JSON object with a "command"';
  }
  const command = (value as Record<string, unknown>).command;
  if (typeof command !== "string") return 'the request has no "command" string';
  if (!(CONTROL_COMMANDS as readonly string[]).includes(command)) {
    return `unknown command ${JSON.stringify(command)}; known: ${[...CONTROL_COMMANDS].sort().join(", ")}`;
  }
  const id = (value as Record<string, unknown>).id;
  return id === undefined
    ? { command: command as ControlCommand }
    : { command: command as ControlCommand, id };
}
