/**
 * Public-address discovery over HTTP: ask a "what is my IP" service, from a given local address, which
 * address it sees. The first method the firefly backend tries for a private address (the original's
 * order), now with a timeout and a status check (flowd-go-behaviour §7.3, §11.7 item 47).
 *
 * A service may answer with a JSON object holding the address under `ip` (ipify `?format=json`,
 * ipconfig.io `/json`) or with the address alone as text.
 */
import { type IpAddress, IpAddress as Ip } from "./ip.ts";
import { isPrivateAddress } from "./private_ranges.ts";

/** Answers longer than this are no address. */
export const MAX_ANSWER_BYTES = 4096;

/** Discovery through one URL failed; the message names the URL and why. */
export class HttpDiscoveryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HttpDiscoveryError";
  }
}

/** What `httpPublicAddress` needs. */
export interface HttpDiscoveryOptions {
  /** An http:// or https:// URL. */
  url: string;
  /** The connection is made from this address, so the answer is the public address of this one. */
  localAddress: IpAddress;
  /** For the whole exchange: connecting, the answer's headers and its body. */
  timeoutMs: number;
  signal?: AbortSignal;
}

/** Reads at most `max` bytes of a body; more is an error. */
async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  max: number,
  url: string,
): Promise<string> {
  if (body === null) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > max) {
        throw new HttpDiscoveryError(`${url} answered more than ${max} bytes; that is no address`);
      }
      chunks.push(value);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  const all = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all);
}

/** The address in an answer: `{"ip": "..."}` or the bare address as text. */
export function parseAddressAnswer(text: string, url: string): IpAddress {
  const trimmed = text.trim();
  let candidate: unknown = trimmed;
  if (trimmed.startsWith("{")) {
    let value: unknown;
    try {
      value = JSON.parse(trimmed);
    } catch {
      throw new HttpDiscoveryError(`${url} answered JSON that does not parse`);
    }
    candidate = (value as Record<string, unknown>).ip;
    if (candidate === undefined) throw new HttpDiscoveryError(`${url} answered JSON without an "ip" key`);
  }
  const address = typeof candidate === "string" ? Ip.tryParse(candidate) : undefined;
  if (address === undefined) {
    const shown = JSON.stringify(candidate)?.slice(0, 60) ?? String(candidate);
    throw new HttpDiscoveryError(`${url} answered ${shown}, which is not an IP address`);
  }
  return address;
}

/**
 * Asks one service for the public address of `localAddress`. Throws `HttpDiscoveryError` when the URL is
 * unusable, the service cannot be reached, does not answer in time, answers with a non-2xx status, or
 * answers with anything but a public address of the local address's family.
 */
export async function httpPublicAddress(opts: HttpDiscoveryOptions): Promise<IpAddress> {
  const { url, localAddress } = opts;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new HttpDiscoveryError(`${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new HttpDiscoveryError(`${url}: only http and https URLs can be used`);
  }
  const literal = Ip.tryParse(parsed.hostname.replace(/^\[(.*)\]$/, "$1"));
  if (literal !== undefined && literal.family !== localAddress.family) {
    throw new HttpDiscoveryError(`${url} is ${literal.family}, the local address ${localAddress.family}`);
  }
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort("timeout"), opts.timeoutMs);
  const onAbort = () => abort.abort("cancelled");
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  if (opts.signal?.aborted) abort.abort("cancelled");
  // The connection leaves from the local address, and only to server addresses of its family.
  const client = Deno.createHttpClient({ localAddress: Ip.fromBytes(localAddress.bytes()).toString() });
  try {
    let text: string;
    try {
      const response = await fetch(url, {
        client,
        signal: abort.signal,
        headers: { accept: "application/json, text/plain;q=0.9" },
      });
      if (!response.ok) {
        await response.body?.cancel();
        throw new HttpDiscoveryError(`${url} answered HTTP ${response.status}`);
      }
      text = await readLimited(response.body, MAX_ANSWER_BYTES, url);
    } catch (err) {
      if (err instanceof HttpDiscoveryError) throw err;
      if (abort.signal.aborted) {
        throw new HttpDiscoveryError(
          abort.signal.reason === "timeout"
            ? `no answer from ${url} within ${opts.timeoutMs} ms`
            : `query to ${url} cancelled`,
        );
      }
      const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
      throw new HttpDiscoveryError(
        `cannot reach ${url} from ${localAddress}: ${err instanceof Error ? err.message : err}${cause}`,
      );
    }
    const address = parseAddressAnswer(text, url);
    if (address.family !== localAddress.family) {
      throw new HttpDiscoveryError(`${url} answered ${address}, not an ${localAddress.family} address`);
    }
    if (isPrivateAddress(address)) {
      throw new HttpDiscoveryError(`${url} answered ${address}, which is not a public address`);
    }
    return address;
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", onAbort);
    client.close();
  }
}
