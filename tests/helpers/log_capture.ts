/** Captures the daemon's log lines in a test; logging is reset when the capture is disposed. */
import { resetSync } from "@logtape/logtape";
import { type CliLogLevel, setupLogging } from "../../src/core/log.ts";

/** Log lines captured so far (logfmt text), and a disposer. */
export interface LogCapture extends Disposable {
  readonly lines: string[];
  /** Lines matching a pattern. */
  matching(re: RegExp): string[];
}

/** Sends every log line at `level` and above into an array until disposed. */
export function captureLogs(level: CliLogLevel = "debug"): LogCapture {
  const lines: string[] = [];
  setupLogging({ level, withTime: false, write: (line) => lines.push(line) });
  return {
    lines,
    matching: (re) => lines.filter((l) => re.test(l)),
    [Symbol.dispose]: () => resetSync(),
  };
}
