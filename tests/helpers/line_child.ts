/**
 * Child processes that talk in lines: the peers the namespace tests run (traffic_peer.ts, tcp_peer.ts)
 * write one event per stdout line and read commands from stdin; the test side waits for lines and sends
 * commands.
 */
import { scaled } from "./time_scale.ts";

const encoder = new TextEncoder();

/** Child side: writes one line to stdout, at once. */
export function say(line: string): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

/** Child side: the lines read from stdin, trimmed. */
export async function* stdinLines(): AsyncGenerator<string> {
  let buf = "";
  const decoder = new TextDecoder();
  for await (const chunk of Deno.stdin.readable) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
    }
  }
}

/** Test side: a running child; wait for its lines, send it commands, stop it. */
export interface LineChild extends AsyncDisposable {
  /** Resolves with the next stdout line that starts with `word` (and satisfies `accept`, if given). */
  expect(word: string, timeoutMs?: number, accept?: (line: string) => boolean): Promise<string>;
  send(line: string): Promise<void>;
}

/** Test side: starts `argv`; `label` names the child in errors. */
export function startLineChild(argv: string[], label: string): LineChild {
  const [bin, ...rest] = argv;
  const child = new Deno.Command(bin!, { args: rest, stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  const writer = child.stdin.getWriter();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(child.stderr).text();
  let pending = "";
  const nextLine = async (): Promise<string | undefined> => {
    for (;;) {
      const nl = pending.indexOf("\n");
      if (nl >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        return line;
      }
      const { value, done } = await reader.read();
      if (done) return undefined;
      pending += value;
    }
  };
  return {
    async expect(word, timeoutMs = 10_000, accept) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) =>
        timer = setTimeout(
          () => reject(new Error(`${label}: no "${word}" within ${timeoutMs} ms`)),
          scaled(timeoutMs),
        )
      );
      try {
        for (;;) {
          const line = await Promise.race([nextLine(), timeout]);
          if (line === undefined) {
            throw new Error(`${label} ended before "${word}": ${(await stderr).trim()}`);
          }
          if (line.startsWith(word) && (accept?.(line) ?? true)) return line;
        }
      } finally {
        clearTimeout(timer);
      }
    },
    async send(line) {
      await writer.write(encoder.encode(line + "\n"));
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await writer.close().catch(() => {});
      await reader.cancel().catch(() => {});
      await child.status;
      await stderr;
    },
  };
}
