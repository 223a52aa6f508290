/**
 * Strict HTTP/1.1 request parsing for the daemon's own server (http_server.ts): the request head
 * (request line and header fields, RFC 9112 §2-5) and chunked bodies (§7.1), from bytes in a buffer.
 *
 * Strict on purpose: anything ambiguous that proxies and servers have disagreed about (request smuggling)
 * is a 400: bare CR or LF, whitespace before a colon, folded lines, both Content-Length and
 * Transfer-Encoding, repeated Content-Length, a chunk size that is not hex.
 */

/** Why a request was refused before the handler saw it; `reason` labels the health counter. */
export type RejectReason =
  | "bad_request"
  | "header_too_large"
  | "unsupported_version"
  | "unsupported_transfer_encoding"
  | "expectation_failed"
  | "body_too_large"
  | "truncated_body"
  | "body_timeout"
  | "stopping"
  | "handler_error";

/** Every rejection reason, in the order the health metrics list them. */
export const REJECT_REASONS: readonly RejectReason[] = [
  "bad_request",
  "header_too_large",
  "unsupported_version",
  "unsupported_transfer_encoding",
  "expectation_failed",
  "body_too_large",
  "truncated_body",
  "body_timeout",
  "stopping",
  "handler_error",
];

/** A request the server answers itself: status, a message for the client and the log, a reason label. */
export class HttpRejection {
  constructor(readonly status: number, readonly message: string, readonly reason: RejectReason) {}
}

/** The parsed request head. Header names keep their case; the Request built from them lowercases. */
export interface RequestHead {
  readonly method: string;
  readonly target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  readonly minor: 0 | 1;
  readonly headers: [string, string][];
  /** Declared body length; -1 when the body is chunked. */
  readonly contentLength: number;
  /** The client wants the connection kept open after the response. */
  readonly keepAlive: boolean;
  /** `Expect: 100-continue` was sent (HTTP/1.1 only). */
  readonly expectContinue: boolean;
}

const CR = 13;
const LF = 10;

/**
 * Index just past the CRLFCRLF that ends a head in `buf[from..to)`, or -1. `scanFrom` lets a caller
 * resume where the previous search stopped instead of rescanning the whole head after each read.
 */
export function findHeadEnd(buf: Uint8Array, from: number, to: number, scanFrom = from): number {
  let i = Math.max(from, scanFrom - 3);
  for (;;) {
    i = buf.indexOf(CR, i);
    if (i < 0 || i + 3 >= to) return -1;
    if (buf[i + 1] === LF && buf[i + 2] === CR && buf[i + 3] === LF) return i + 4;
    i++;
  }
}

/** Skips the empty lines a client may send before a request line (RFC 9112 §2.2); returns the new start. */
export function skipLeadingNewlines(buf: Uint8Array, from: number, to: number): number {
  while (from < to && (buf[from] === CR || buf[from] === LF)) from++;
  return from;
}

const latin1Fast = new TextDecoder("latin1");
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const TARGET = /^[\x21-\x7e]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const NON_ASCII = /[\x80-\uffff]/;
const CONTENT_LENGTH = /^[0-9]{1,15}$/;

/** Bytes to a string, one char per byte (TextDecoder's "latin1" is windows-1252, wrong above 0x7f). */
function latin1(bytes: Uint8Array): string {
  // A usual head, in JS: cheaper than the decoder's op, and right for every byte.
  if (bytes.length <= 4096) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  const fast = latin1Fast.decode(bytes);
  if (!NON_ASCII.test(fast)) return fast;
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, Math.min(i + 4096, bytes.length)));
  }
  return out;
}

/** At most `n` characters of client input, for a message. */
function clip(s: string, n = 80): string {
  return JSON.stringify(s.length > n ? `${s.slice(0, n)}...` : s);
}

function bad(message: string): HttpRejection {
  return new HttpRejection(400, message, "bad_request");
}

/** Strips optional whitespace (SP, HTAB) around a field value. */
function trimOws(s: string): string {
  let a = 0, b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * Parses the head in `buf[start..end)`, `end` just past its CRLFCRLF. `maxHeaders` bounds the number of
 * fields (431 beyond).
 */
export function parseRequestHead(
  buf: Uint8Array,
  start: number,
  end: number,
  maxHeaders: number,
): RequestHead | HttpRejection {
  const text = latin1(buf.subarray(start, end - 4));
  let lineEnd = text.indexOf("\r\n");
  if (lineEnd < 0) lineEnd = text.length;
  const requestLine = text.slice(0, lineEnd);
  const sp1 = requestLine.indexOf(" ");
  const sp2 = sp1 < 0 ? -1 : requestLine.indexOf(" ", sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || requestLine.indexOf(" ", sp2 + 1) >= 0) {
    return bad(`the request line ${clip(requestLine)} is not "METHOD target HTTP/1.1"`);
  }
  const method = requestLine.slice(0, sp1);
  const target = requestLine.slice(sp1 + 1, sp2);
  const version = requestLine.slice(sp2 + 1);
  if (!TOKEN.test(method)) return bad(`the method ${clip(method)} is not a token`);
  if (!TARGET.test(target)) return bad(`the request target ${clip(target)} has invalid characters`);
  let minor: 0 | 1;
  if (version === "HTTP/1.1") minor = 1;
  else if (version === "HTTP/1.0") minor = 0;
  else if (/^HTTP\/[0-9]\.[0-9]$/.test(version)) {
    return new HttpRejection(505, `${version} is not supported; use HTTP/1.1`, "unsupported_version");
  } else return bad(`the protocol version ${clip(version)} is not HTTP/1.x`);

  const headers: [string, string][] = [];
  let contentLength = -2; // -2: none seen
  let transferEncoding: string | undefined;
  let hosts = 0;
  let close = minor === 0;
  let expectContinue = false;
  let pos = lineEnd + 2;
  while (pos < text.length) {
    let next = text.indexOf("\r\n", pos);
    if (next < 0) next = text.length;
    const line = text.slice(pos, next);
    pos = next + 2;
    if (headers.length >= maxHeaders) {
      return new HttpRejection(431, `more than ${maxHeaders} header fields`, "header_too_large");
    }
    const colon = line.indexOf(":");
    const name = colon < 0 ? "" : line.slice(0, colon);
    if (!TOKEN.test(name)) {
      // Also refuses obsolete line folding (a line starting with whitespace) and "Name : value".
      return bad(`the header line ${clip(line)} is not "Name: value"`);
    }
    const value = trimOws(line.slice(colon + 1));
    if (!FIELD_VALUE.test(value)) {
      return bad(`the value of header ${clip(name)} has control characters (a bare CR or LF, NUL)`);
    }
    headers.push([name, value]);
    // Only names of these lengths can be one of the fields the server itself interprets.
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === "host") hosts++;
        break;
      case 6:
        if (name.toLowerCase() === "expect") {
          if (value.toLowerCase() !== "100-continue") {
            return new HttpRejection(417, `Expect ${clip(value)} is not supported`, "expectation_failed");
          }
          expectContinue = minor === 1;
        }
        break;
      case 10:
        if (name.toLowerCase() === "connection") {
          for (const token of value.toLowerCase().split(",")) {
            const t = trimOws(token);
            if (t === "close") close = true;
            else if (t === "keep-alive" && minor === 0) close = false;
          }
        }
        break;
      case 14:
        if (name.toLowerCase() === "content-length") {
          if (contentLength !== -2) return bad("more than one Content-Length header");
          if (!CONTENT_LENGTH.test(value)) return bad(`Content-Length ${clip(value)} is not a number`);
          contentLength = Number(value);
        }
        break;
      case 17:
        if (name.toLowerCase() === "transfer-encoding") {
          transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
        }
        break;
    }
  }
  if (minor === 1 && hosts !== 1) {
    return bad(hosts === 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header");
  }
  if (transferEncoding !== undefined) {
    if (contentLength !== -2) return bad("both Content-Length and Transfer-Encoding are present");
    if (minor === 0) return bad("Transfer-Encoding is not allowed in an HTTP/1.0 request");
    const codings = transferEncoding.toLowerCase().split(",").map(trimOws);
    if (codings.length !== 1 || codings[0] !== "chunked") {
      if (codings.at(-1) !== "chunked" || codings.indexOf("chunked") !== codings.length - 1) {
        return bad(`Transfer-Encoding ${clip(transferEncoding)} does not end in a single chunked`);
      }
      return new HttpRejection(
        501,
        `Transfer-Encoding ${clip(transferEncoding)} is not supported; only chunked is`,
        "unsupported_transfer_encoding",
      );
    }
    contentLength = -1;
  }
  return {
    method,
    target,
    minor,
    headers,
    contentLength: contentLength === -2 ? 0 : contentLength,
    keepAlive: !close,
    expectContinue,
  };
}

const enum ChunkState {
  Size,
  Data,
  DataEnd,
  Trailer,
  Done,
}

/** Longest chunk-size line (size and extensions) and trailer section accepted. */
const MAX_CHUNK_LINE = 4096;

/**
 * Decodes a chunked body incrementally: feed it bytes with `push`, it copies the data out and says how
 * much it consumed. Chunk extensions and trailer fields are read and ignored, within bounds.
 */
export class ChunkedDecoder {
  #state = ChunkState.Size;
  #remaining = 0;
  #lineBytes = 0;
  #size = -1;
  /** Within a chunk-size line: 0 in the digits, 1 after whitespace following them, 2 in extensions. */
  #sizePart = 0;
  #trailerLineEmpty = true;
  #total = 0;
  readonly #parts: Uint8Array[] = [];

  constructor(private readonly maxBytes: number) {}

  /** True once the last chunk and the trailer section are complete. */
  get done(): boolean {
    return this.#state === ChunkState.Done;
  }

  /**
   * Consumes bytes of `buf[from..to)` and returns how many, or a rejection. Once done, what is left
   * belongs to the next request; before that, a CR at the end may be left unconsumed until its LF comes.
   */
  push(buf: Uint8Array, from: number, to: number): number | HttpRejection {
    let i = from;
    while (i < to) {
      switch (this.#state) {
        case ChunkState.Size: {
          const b = buf[i++]!;
          if (++this.#lineBytes > MAX_CHUNK_LINE) return bad("a chunk-size line is too long");
          if (b === LF) return bad("a chunk-size line ends in a bare LF");
          if (b === CR) {
            if (i >= to) {
              i--; // wait for the LF with the CR still unread
              this.#lineBytes--;
              return i - from;
            }
            if (buf[i++] !== LF) return bad("a chunk-size line has a bare CR");
            if (this.#size < 0) return bad("a chunk has no size");
            this.#lineBytes = 0;
            this.#sizePart = 0;
            if (this.#size === 0) {
              this.#state = ChunkState.Trailer;
              this.#trailerLineEmpty = true;
            } else {
              this.#remaining = this.#size;
              this.#state = ChunkState.Data;
            }
            this.#size = -1;
            break;
          }
          if (this.#sizePart === 2) break; // extensions are ignored
          const digit = this.#sizePart === 0 ? hexValue(b) : -1;
          if (digit >= 0) {
            this.#size = (this.#size < 0 ? 0 : this.#size) * 16 + digit;
            if (this.#total + this.#size > this.maxBytes) {
              return new HttpRejection(
                413,
                `the request body is larger than the limit of ${this.maxBytes} bytes`,
                "body_too_large",
              );
            }
          } else if (b === 0x3b && this.#size >= 0) {
            this.#sizePart = 2; // ";name=value" extensions
          } else if ((b === 0x20 || b === 0x09) && this.#size >= 0) {
            this.#sizePart = 1; // whitespace before ";" is tolerated, as most servers do
          } else {
            return bad(`a chunk size is not a hexadecimal number (byte 0x${b.toString(16)})`);
          }
          break;
        }
        case ChunkState.Data: {
          const n = Math.min(this.#remaining, to - i);
          this.#parts.push(buf.slice(i, i + n));
          this.#total += n;
          this.#remaining -= n;
          i += n;
          if (this.#remaining === 0) this.#state = ChunkState.DataEnd;
          break;
        }
        case ChunkState.DataEnd: {
          if (to - i < 2) {
            if (buf[i] !== CR) return bad("a chunk's data is longer than its size");
            return i - from; // wait for the LF
          }
          if (buf[i] !== CR || buf[i + 1] !== LF) return bad("a chunk's data is longer than its size");
          i += 2;
          this.#state = ChunkState.Size;
          break;
        }
        case ChunkState.Trailer: {
          const b = buf[i++]!;
          if (++this.#lineBytes > MAX_CHUNK_LINE) return bad("the trailer section is too long");
          if (b === LF) return bad("a trailer line ends in a bare LF");
          if (b === CR) {
            if (i >= to) {
              i--;
              this.#lineBytes--;
              return i - from;
            }
            if (buf[i++] !== LF) return bad("a trailer line has a bare CR");
            if (this.#trailerLineEmpty) {
              this.#state = ChunkState.Done;
              return i - from;
            }
            this.#trailerLineEmpty = true;
            break;
          }
          this.#trailerLineEmpty = false;
          break;
        }
        case ChunkState.Done:
          return i - from;
      }
    }
    return i - from;
  }

  /** The body decoded so far, as one array. */
  body(): Uint8Array {
    if (this.#parts.length === 1) return this.#parts[0]!;
    const out = new Uint8Array(this.#total);
    let at = 0;
    for (const p of this.#parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
}

function hexValue(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  return -1;
}
