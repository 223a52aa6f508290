/**
 * Telling systemd how the daemon is doing (`Type=notify`, sd_notify(3)): READY=1 once every component
 * started, RELOADING=1 (with MONOTONIC_USEC, as systemd 253 and later want) then READY=1 around a reload,
 * STOPPING=1 when the stop begins, and STATUS= lines `systemctl status` shows. Nothing happens outside
 * systemd (no $NOTIFY_SOCKET), and a notification that cannot be sent is logged, never fatal.
 */
import { monotonicMicros, sendUnixDatagram } from "../../ffi/unix_datagram.ts";
import { clip } from "./clip.ts";
import { errorMessage } from "./errors.ts";
import { logger } from "./log.ts";

const log = logger("core", "systemd");

/** Sends sd_notify messages to the socket systemd named, if any. */
export class SystemdNotifier {
  constructor(readonly socket: string | undefined = Deno.env.get("NOTIFY_SOCKET")) {}

  /** Whether a service manager listens. */
  get active(): boolean {
    return this.socket !== undefined && this.socket !== "";
  }

  /** Every component started. */
  ready(status: string): void {
    this.#send(["READY=1", `STATUS=${status}`, `MAINPID=${Deno.pid}`]);
  }

  /** A reload begins. */
  reloading(): void {
    this.#send(["RELOADING=1", `MONOTONIC_USEC=${monotonicMicros()}`, "STATUS=reloading the configuration"]);
  }

  /** A reload ended (applied or refused); the daemon runs either way. */
  reloaded(status: string): void {
    this.#send(["READY=1", `STATUS=${status}`]);
  }

  /** The stop begins. */
  stopping(): void {
    this.#send(["STOPPING=1", "STATUS=stopping"]);
  }

  #send(lines: string[]): void {
    if (!this.active) return;
    // A STATUS line is one line of text: no newline may end it early.
    const text = lines.map((l) => clip(l.replaceAll("\n", "; "), 400)).join("\n") + "\n";
    try {
      sendUnixDatagram(this.socket!, new TextEncoder().encode(text));
    } catch (err) {
      log.warn("cannot notify the service manager", { socket: this.socket, err: errorMessage(err) });
    }
  }
}
