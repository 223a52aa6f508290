/**
 * The RFC 5424 syslog header that precedes a firefly's JSON: `<134>1 TIMESTAMP HOST APP - firefly-json - `.
 *
 * Building always yields a well-formed header (the original left an empty timestamp on start/end fireflies);
 * parsing accepts what flowd, flowd-go (including its empty fields), XRootD (`-` timestamp) and dCache send.
 */
import { formatMicrosUtc, type Micros, parseRfc3339Micros } from "../core/time.ts";

/** PRI of every firefly: facility local0 (16) × 8 + severity informational (6). */
export const SYSLOG_PRI = 134;

/** The only syslog protocol version. */
export const SYSLOG_VERSION = 1;

/** MSGID that identifies a firefly. */
export const FIREFLY_MSG_ID = "firefly-json";

/** RFC 5424 NILVALUE, for a field without a value. */
export const NILVALUE = "-";

/** RFC 5424 length limits of HOSTNAME and APP-NAME. */
export const HOSTNAME_MAX_LENGTH = 255;
export const APP_NAME_MAX_LENGTH = 48;

/** What varies between firefly headers. */
export interface SyslogHeaderOptions {
  /** Send time; undefined gives the NILVALUE `-` (never an empty field). */
  timestamp: Micros | undefined;
  hostname: string;
  appName: string;
}

/**
 * Makes a header field legal: printable US-ASCII without spaces (RFC 5424 PRINTUSASCII), at most `maxLength`
 * characters, `-` when nothing is left. Other characters become `_` so that the field stays one token.
 */
export function sanitizeHeaderField(value: string, maxLength: number): string {
  let out = "";
  for (const ch of value) {
    const code = ch.codePointAt(0) ?? 0;
    out += code >= 33 && code <= 126 ? ch : "_";
  }
  out = out.slice(0, maxLength);
  return out === "" ? NILVALUE : out;
}

/** Builds `<134>1 <TS|-> <host> <app> - firefly-json - ` (with the trailing space before the JSON). */
export function buildSyslogHeader(opts: SyslogHeaderOptions): string {
  return syslogHeaderFor(opts.hostname, opts.appName)(opts.timestamp);
}

/**
 * `buildSyslogHeader` for one sender: host and app are made legal once, so each header costs only its
 * timestamp (a sender's fields never change).
 */
export function syslogHeaderFor(
  hostname: string,
  appName: string,
): (timestamp: Micros | undefined) => string {
  const host = sanitizeHeaderField(hostname, HOSTNAME_MAX_LENGTH);
  const app = sanitizeHeaderField(appName, APP_NAME_MAX_LENGTH);
  const tail = ` ${host} ${app} ${NILVALUE} ${FIREFLY_MSG_ID} ${NILVALUE} `;
  const head = `<${SYSLOG_PRI}>${SYSLOG_VERSION} `;
  return (timestamp) => head + (timestamp === undefined ? NILVALUE : formatMicrosUtc(timestamp)) + tail;
}

/** A parsed header. String fields are as received (`-` stays `-`; flowd-go may leave some empty). */
export interface SyslogHeader {
  pri: number;
  version: number;
  /** Undefined for `-` or an empty field. */
  timestamp?: Micros;
  hostname: string;
  appName: string;
  procId: string;
  msgId: string;
  structuredData: string;
  /** The MSG part: everything after the single space that ends the header (the firefly JSON). */
  rest: string;
}

/** The text is not an RFC 5424 header as firefly senders write it; the message says which part. */
export class SyslogHeaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SyslogHeaderError";
  }
}

const PRI_VERSION = /^<(\d{1,3})>([1-9]\d{0,2}) /;

/** Shortens text quoted in error messages. */
function excerpt(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
}

/** Reads the STRUCTURED-DATA field starting at `pos`; returns the index just after it. */
function scanStructuredData(text: string, pos: number): number {
  if (text[pos] === "-") return pos + 1;
  if (text[pos] !== "[") {
    throw new SyslogHeaderError(
      `syslog structured data must be "-" or [...] elements, got ${excerpt(text.slice(pos))}`,
    );
  }
  let i = pos;
  while (text[i] === "[") {
    i++;
    let inQuotes = false;
    for (;; i++) {
      if (i >= text.length) {
        throw new SyslogHeaderError(`syslog structured data element is not closed by "]"`);
      }
      const ch = text[i];
      if (inQuotes) {
        if (ch === "\\") i++; // escaped ", \ or ]
        else if (ch === '"') inQuotes = false;
      } else if (ch === '"') {
        inQuotes = true;
      } else if (ch === "]") {
        i++;
        break;
      }
    }
  }
  return i;
}

/**
 * Parses `<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA[ MSG]`.
 * Empty fields (flowd-go's missing timestamp or app name show as two spaces) are accepted; a timestamp
 * must otherwise be `-` or an RFC 3339 date-time. Throws `SyslogHeaderError` naming the bad part.
 */
export function parseSyslogHeader(text: string): SyslogHeader {
  const m = PRI_VERSION.exec(text);
  if (!m) {
    throw new SyslogHeaderError(`syslog header must start with "<PRI>VERSION ", got ${excerpt(text)}`);
  }
  const pri = Number(m[1]);
  if (pri > 191) throw new SyslogHeaderError(`syslog PRI ${pri} is above 191`);
  const version = Number(m[2]);
  let pos = m[0].length;
  const names = ["TIMESTAMP", "HOSTNAME", "APP-NAME", "PROCID", "MSGID"] as const;
  const fields: string[] = [];
  for (const name of names) {
    const end = text.indexOf(" ", pos);
    if (end < 0) {
      const where = pos < text.length ? "after" : "before";
      throw new SyslogHeaderError(`syslog header ends ${where} its ${name} field`);
    }
    fields.push(text.slice(pos, end));
    pos = end + 1;
  }
  const [tsText = "", hostname = "", appName = "", procId = "", msgId = ""] = fields;
  let timestamp: Micros | undefined;
  if (tsText !== "" && tsText !== NILVALUE) {
    timestamp = parseRfc3339Micros(tsText);
    if (timestamp === undefined) {
      throw new SyslogHeaderError(
        `syslog TIMESTAMP ${excerpt(tsText)} is neither "-" nor an RFC 3339 date-time`,
      );
    }
  }
  if (pos >= text.length) throw new SyslogHeaderError("syslog header ends before its STRUCTURED-DATA field");
  const sdEnd = scanStructuredData(text, pos);
  const structuredData = text.slice(pos, sdEnd);
  let rest = "";
  if (sdEnd < text.length) {
    if (text[sdEnd] !== " ") {
      throw new SyslogHeaderError(
        `syslog STRUCTURED-DATA must be followed by a space, got ${excerpt(text.slice(pos, sdEnd + 1))}`,
      );
    }
    rest = text.slice(sdEnd + 1);
  }
  const header: SyslogHeader = { pri, version, hostname, appName, procId, msgId, structuredData, rest };
  if (timestamp !== undefined) header.timestamp = timestamp;
  return header;
}
