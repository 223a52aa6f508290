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
  async response(timeoutMs = 5000): Promise<RawResponse> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const parsed = this.#parse();
      if (parsed) return parsed;
      if (this.#eof) throw new Error(`the connection ended before a whole response: ${this.#pending}`);
      const got = await this.#readMore(deadline);
      if (got === "timeout") throw new Error(`no whole response within ${timeoutMs} ms: ${this.#pending}`);
    }
  }

  #parse(): RawResponse | undefined {
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
    const length = status < 200 ? 0 : Number(headers.get("content-length") ?? 0);
    if (this.#pending.length < end + 4 + length) return undefined;
    const body = this.#pending.slice(end + 4, end + 4 + length);
    this.#pending = this.#pending.slice(end + 4 + length);
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
