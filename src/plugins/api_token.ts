/**
 * Bearer-token authentication for the api plugin: the token comes from a file (`plugins.api.tokenFile`),
 * read once at start with a size limit, and requests are checked in constant time. The token never
 * appears in a log line or an error message.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { errorMessage, StartupError } from "../core/errors.ts";

/** Largest token file accepted, in bytes. */
export const MAX_TOKEN_FILE_BYTES = 4096;

/** Printable ASCII without spaces: what fits in `Authorization: Bearer <token>` unchanged. */
const TOKEN_CHARS = /^[\x21-\x7e]+$/;

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}

/** A configured token; `check` says what is wrong with a request's Authorization header, if anything. */
export class BearerToken {
  readonly #digest: Uint8Array;

  constructor(token: string) {
    this.#digest = digest(token);
  }

  /** Undefined when `authorization` carries the token, else the reason for the 401 (without the token). */
  check(authorization: string | undefined): string | undefined {
    if (authorization === undefined || authorization === "") {
      return "this request needs an Authorization: Bearer header with the API token";
    }
    if (authorization.length < 7 || authorization.slice(0, 7).toLowerCase() !== "bearer ") {
      return "the Authorization header is not a Bearer token";
    }
    // Comparing digests takes the same time whatever the length or content of the offered token.
    if (!timingSafeEqual(digest(authorization.slice(7).trim()), this.#digest)) {
      return "the bearer token is not the API token";
    }
    return undefined;
  }
}

/** Reads the token file: a regular file of at most MAX_TOKEN_FILE_BYTES, its content trimmed. */
export async function readTokenFile(path: string): Promise<BearerToken> {
  const fail = (why: string, cause?: unknown) =>
    new StartupError(`api: cannot use the token file ${path}: ${why}`, { cause });
  let text: string;
  try {
    // Checked before opening: opening a FIFO would wait for a writer.
    const info = await Deno.stat(path);
    if (!info.isFile) throw fail("it is not a regular file");
    using file = await Deno.open(path, { read: true });
    const buf = new Uint8Array(MAX_TOKEN_FILE_BYTES + 1);
    let got = 0;
    for (;;) {
      const n = await file.read(buf.subarray(got));
      if (n === null) break;
      got += n;
      if (got > MAX_TOKEN_FILE_BYTES) throw fail(`it is larger than ${MAX_TOKEN_FILE_BYTES} bytes`);
    }
    text = new TextDecoder("utf-8", { fatal: true }).decode(buf.subarray(0, got)).trim();
  } catch (err) {
    if (err instanceof StartupError) throw err;
    if (err instanceof TypeError) throw fail("it is not valid UTF-8 text", err);
    throw fail(errorMessage(err), err);
  }
  if (text === "") throw fail("it is empty");
  if (!TOKEN_CHARS.test(text)) {
    throw fail("the token must be printable ASCII without spaces or line breaks inside");
  }
  return new BearerToken(text);
}
