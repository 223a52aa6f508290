/**
 * Logging: logtape loggers under the "flowd-go" category, written to stderr in logfmt
 * (`level=INFO logger=plugins.api msg="..." key=value`), like the original's slog text handler.
 */
import {
  configureSync,
  getLogger,
  type Logger,
  type LogLevel,
  type LogRecord,
  resetSync,
} from "@logtape/logtape";
import { clip, MAX_LINE_CHARS, MAX_MESSAGE_CHARS } from "./clip.ts";

export type { Logger } from "@logtape/logtape";

/** The CLI's level names (the original's), in increasing severity. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"] as const;
export type CliLogLevel = typeof LOG_LEVELS[number];

const TO_LOGTAPE: Record<CliLogLevel, LogLevel> = {
  trace: "trace",
  debug: "debug",
  info: "info",
  warn: "warning",
  error: "error",
};

const LEVEL_TEXT: Record<LogLevel, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARN",
  error: "ERROR",
  fatal: "FATAL",
};

/** Options for `setupLogging`. */
export interface LoggingOptions {
  level: CliLogLevel;
  withTime: boolean;
  /** Where lines go; stderr unless a test captures them. */
  write?: (line: string) => void;
}

/** A logfmt value: bare when it can be, else JSON-quoted; input longer than ~200 characters is clipped. */
function quote(value: string, max?: number): string {
  const v = clip(value, max);
  return /^[^\s"=\\]+$/.test(v) && v.length > 0 ? v : JSON.stringify(v);
}

function renderValue(v: unknown): string {
  if (v instanceof Error) return quote(v.message);
  if (typeof v === "string") return quote(v);
  if (
    typeof v === "number" || typeof v === "boolean" || typeof v === "bigint" || v === null || v === undefined
  ) {
    return String(v);
  }
  if (typeof v === "object" && v !== null && typeof (v as { toString?: unknown }).toString === "function") {
    const s = String(v);
    if (s !== "[object Object]") return quote(s);
  }
  try {
    return quote(JSON.stringify(v));
  } catch {
    return quote(String(v));
  }
}

/** Renders one record as a logfmt line (without newline). */
export function formatRecord(record: LogRecord, withTime: boolean): string {
  const parts: string[] = [];
  if (withTime) parts.push(`time=${new Date(record.timestamp).toISOString()}`);
  parts.push(`level=${LEVEL_TEXT[record.level]}`);
  const category = record.category.slice(1).join(".");
  if (category) parts.push(`logger=${category}`);
  const msg = record.message.map((m) => typeof m === "string" ? m : renderValue(m)).join("");
  // Messages are ours (input in them is clipped where it is quoted), so they get more room than a value.
  parts.push(`msg=${quote(msg, MAX_MESSAGE_CHARS)}`);
  for (const [k, v] of Object.entries(record.properties)) parts.push(`${clip(k, 64)}=${renderValue(v)}`);
  const line = parts.join(" ");
  // Many fields of clipped input could still add up: the line as a whole is bounded too.
  return line.length <= MAX_LINE_CHARS ? line : `${line.slice(0, MAX_LINE_CHARS)}…(line cut)`;
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let off = 0;
  while (off < bytes.length) off += Deno.stderr.writeSync(bytes.subarray(off));
}

let debugOn = false;

/**
 * True when debug lines are written. Code that runs per event asks this before `log.debug`: logtape's own
 * level check on every call cost a few percent of the named pipe's time per line.
 */
export function debugLogging(): boolean {
  return debugOn;
}

/** Configures the process-wide logging once the CLI knows the level; callable again (tests, reload). */
export function setupLogging(opts: LoggingOptions): void {
  const write = opts.write ?? writeStderr;
  debugOn = opts.level === "debug" || opts.level === "trace";
  resetSync();
  configureSync({
    reset: true,
    sinks: { main: (record: LogRecord) => write(formatRecord(record, opts.withTime)) },
    loggers: [
      { category: ["flowd-go"], lowestLevel: TO_LOGTAPE[opts.level], sinks: ["main"] },
      // logtape reports its own problems under this category; keep them visible but quiet.
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
}

/** A logger for one part of the daemon, for example `logger("plugins", "api")`. */
export function logger(...category: string[]): Logger {
  return getLogger(["flowd-go", ...category]);
}

/**
 * Limits a repeated log line to one per `intervalMs`, reporting how many were suppressed.
 * Used for per-datagram or per-event failures that could otherwise flood the journal.
 */
export class RateLimitedLog {
  #last = -Infinity;
  #suppressed = 0;
  constructor(private readonly intervalMs = 10_000) {}

  /** Calls `emit` with the number suppressed since the last emitted line, or counts this one as suppressed. */
  run(emit: (suppressed: number) => void): void {
    const now = performance.now();
    if (now - this.#last >= this.intervalMs) {
      this.#last = now;
      const n = this.#suppressed;
      this.#suppressed = 0;
      emit(n);
    } else {
      this.#suppressed++;
    }
  }
}
