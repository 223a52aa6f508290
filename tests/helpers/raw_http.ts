/**
 * A raw HTTP/1.1 client over a TCP socket, for tests that must send what fetch never would: unfinished
 * heads, truncated bodies, pipelined requests, bad framing, connections left idle.
 */

/** One response as read off the wire. */
export interface RawResponse {
  status: number;
  /** Header names in lower case. */
  headers: Map<string, string>;
  body: string;
}

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** A client connection; dispose it (or call close) to free the socket. */
export class RawHttpClient implements AsyncDisposable {
  #pending = "";
  #eof = false;
  #closed = false;

  private constructor(readonly conn: Deno.TcpConn) {}

  /** Connects to `hostname:port`. */
  static async connect(port: number, hostname = "127.0.0.1"): Promise<RawHttpClient> {
    return new RawHttpClient(await Deno.connect({ hostname, port }));
  }

  /** True once the server closed its side (EOF or reset seen). */
  get eof(): boolean {
    return this.#eof;
  }

  /** Sends text (as Latin-1 bytes) or bytes. */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    let off = 0;
    while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
  }

  /** Half-closes: the server sees EOF but can still answer. */
  async closeWrite(): Promise<void> {
    await this.conn.closeWrite();
  }

  /** One read into the pending text; false on EOF, reset or timeout (`timedOut` then says which). */
  async #readMore(deadline: number): Promise<"data" | "eof" | "timeout"> {
    const buf = new Uint8Array(65536);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), Math.max(0, deadline - performance.now()));
    });
    const read = this.conn.read(buf).catch(() => null);
    const n = await Promise.race([read, timeout]);
    clearTimeout(timer);
    if (n === "timeout") {
      // The read stays pending; closing the connection ends it.
      this.close();
      return "timeout";
    }
    if (n === null) {
      this.#eof = true;
      return "eof";
    }
    this.#pending += latin1.decode(buf.subarray(0, n));
    return "data";
  }

  /**
   * Reads one response (a 1xx included) within `timeoutMs`; throws when the connection ends or the time
   * runs out first, with what was received.
   */
  async response(timeoutMs = 5000, opts: { bodyless?: boolean } = {}): Promise<RawResponse> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const parsed = this.#parse(opts.bodyless ?? false);
      if (parsed) return parsed;
      if (this.#eof) throw new Error(`the connection ended before a whole response: ${this.#pending}`);
      const got = await this.#readMore(deadline);
      if (got === "timeout") throw new Error(`no whole response within ${timeoutMs} ms: ${this.#pending}`);
    }
  }

  /** What was received and not taken by `response()` (say, a body ended by closing); clears it. */
  received(): string {
    const text = this.#pending;
    this.#pending = "";
    return text;
  }

  #parse(bodyless: boolean): RawResponse | undefined {
    const end = this.#pending.indexOf("\r\n\r\n");
    if (end < 0) return undefined;
    const lines = this.#pending.slice(0, end).split("\r\n");
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1]);
    if (!Number.isInteger(status)) throw new Error(`not a status line: ${lines[0]}`);
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
    }
    if (!bodyless && status >= 200 && headers.get("transfer-encoding") === "chunked") {
      return this.#parseChunked(end + 4, status, headers);
    }
    const length = status < 200 || bodyless ? 0 : Number(headers.get("content-length") ?? 0);
    if (this.#pending.length < end + 4 + length) return undefined;
    const body = this.#pending.slice(end + 4, end + 4 + length);
    this.#pending = this.#pending.slice(end + 4 + length);
    return { status, headers, body };
  }

  /** A chunked body from `at`, once all of it (through the last chunk's CRLF) has arrived. */
  #parseChunked(at: number, status: number, headers: Map<string, string>): RawResponse | undefined {
    let body = "";
    for (;;) {
      const lineEnd = this.#pending.indexOf("\r\n", at);
      if (lineEnd < 0) return undefined;
      const size = parseInt(this.#pending.slice(at, lineEnd), 16);
      if (!Number.isInteger(size)) throw new Error(`not a chunk size: ${this.#pending.slice(at, lineEnd)}`);
      const dataEnd = lineEnd + 2 + size;
      if (this.#pending.length < dataEnd + 2) return undefined;
      if (this.#pending.slice(dataEnd, dataEnd + 2) !== "\r\n") throw new Error("a chunk without its CRLF");
      body += this.#pending.slice(lineEnd + 2, dataEnd);
      at = dataEnd + 2;
      if (size === 0) break;
    }
    this.#pending = this.#pending.slice(at);
    return { status, headers, body };
  }

  /**
   * Waits until the server closes the connection, at most `timeoutMs`; returns after how many ms it did,
   * or undefined if it was still open. Anything received meanwhile is kept for `response()`.
   */
  async closedWithin(timeoutMs: number): Promise<number | undefined> {
    const t0 = performance.now();
    const deadline = t0 + timeoutMs;
    while (!this.#eof) {
      if ((await this.#readMore(deadline)) === "timeout") return undefined;
    }
    return performance.now() - t0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** A request head with Host, for a raw client; `extra` lines are added as given. */
export function requestHead(method: string, path: string, extra: string[] = []): string {
  return [`${method} ${path} HTTP/1.1`, "Host: test", ...extra, "", ""].join("\r\n");
}
