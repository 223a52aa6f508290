/** A child process whose stdout is collected line by line, with a wait for a line that matches. */

/** The lines so far, a wait, and a disposer that kills the process. */
export interface LineProcess extends AsyncDisposable {
  readonly lines: string[];
  /** Resolves with the first line matching `re`; rejects after `ms`. */
  waitFor(re: RegExp, what: string, ms?: number): Promise<string>;
}

/** Spawns `cmd args` (stderr discarded) and collects what it prints. */
export function spawnLines(cmd: string, args: string[]): LineProcess {
  const p = new Deno.Command(cmd, { args, stdout: "piped", stderr: "null", stdin: "null" }).spawn();
  const lines: string[] = [];
  const pump = (async () => {
    let buf = "";
    for await (const chunk of p.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      const parts = buf.split("\n");
      buf = parts.pop()!;
      lines.push(...parts);
    }
  })();
  return {
    lines,
    async waitFor(re, what, ms = 10_000) {
      const end = performance.now() + ms;
      for (;;) {
        const hit = lines.find((l) => re.test(l));
        if (hit !== undefined) return hit;
        if (performance.now() > end) throw new Error(`timed out waiting for ${what}: ${lines.join(" / ")}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    async [Symbol.asyncDispose]() {
      try {
        p.kill("SIGKILL");
      } catch { /* gone */ }
      await p.status;
      await pump;
    },
  };
}
