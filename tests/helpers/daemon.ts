/**
 * The real daemon as a separate process, for end-to-end tests: started from the source tree (or from
 * FLOWD_GO_BIN when the tests run against a built binary), its stderr collected line by line.
 */
import dgram from "node:dgram";
import { scaled } from "./time_scale.ts";

const MAIN = new URL("../../src/main.ts", import.meta.url).pathname;

/** The command that runs flowd-go: the built binary if FLOWD_GO_BIN is set, else `deno run src/main.ts`. */
export function flowdCommand(args: string[]): { cmd: string; args: string[] } {
  const bin = Deno.env.get("FLOWD_GO_BIN");
  if (bin) return { cmd: bin, args };
  return { cmd: Deno.execPath(), args: ["run", "--allow-all", "--quiet", MAIN, ...args] };
}

/** Runs flowd-go to completion. */
export async function runFlowd(
  args: string[],
  opts: { env?: Record<string, string>; prefix?: string[] } = {},
): Promise<{
  code: number;
  stdout: string;
  stderr: string;
}> {
  const { cmd, args: argv } = withPrefix(flowdCommand(args), opts.prefix);
  const out = await new Deno.Command(cmd, { args: argv, stdout: "piped", stderr: "piped", env: opts.env })
    .output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** A running daemon. */
export interface Daemon extends AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly lines: string[];
  /** Resolves when a stderr line matches; rejects on timeout or exit. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends a signal and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<number>;
}

/** Puts a command behind a prefix such as `ip netns exec NS` (which execs it: same PID, same signals). */
function withPrefix(
  c: { cmd: string; args: string[] },
  prefix: string[] | undefined,
): { cmd: string; args: string[] } {
  if (!prefix?.length) return c;
  return { cmd: prefix[0]!, args: [...prefix.slice(1), c.cmd, ...c.args] };
}

/** Starts `flowd-go --conf <path> run` (behind `prefix`, if given) and waits until it says it is running. */
export async function startDaemon(
  confPath: string,
  extraArgs: string[] = [],
  opts: { prefix?: string[] } = {},
): Promise<Daemon> {
  const { cmd, args } = withPrefix(
    flowdCommand(["--conf", confPath, "--log-level", "debug", ...extraArgs, "run"]),
    opts.prefix,
  );
  const daemon = superviseProcess(cmd, args);
  try {
    await daemon.waitForLine(/msg="let's go!"/);
  } catch (err) {
    await daemon[Symbol.asyncDispose]();
    throw err;
  }
  return daemon;
}

/**
 * Spawns any command whose stderr is collected line by line, as a `Daemon` (killed with SIGKILL on
 * disposal if not stopped), without waiting for anything.
 */
export function superviseProcess(cmd: string, args: string[], env?: Record<string, string>): Daemon {
  const process = new Deno.Command(cmd, { args, env, stdout: "null", stderr: "piped", stdin: "null" })
    .spawn();
  const lines: string[] = [];
  const listeners = new Set<() => void>();
  let exited = false;
  const pump = (async () => {
    const decoder = new TextDecoderStream();
    let buf = "";
    for await (const chunk of process.stderr.pipeThrough(decoder)) {
      buf += chunk;
      const parts = buf.split("\n");
      buf = parts.pop() ?? "";
      lines.push(...parts);
      for (const l of listeners) l();
    }
    if (buf) lines.push(buf);
    exited = true;
    for (const l of listeners) l();
  })();
  const status = process.status;

  const waitForLine = (re: RegExp, timeoutMs = 10_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const hit = lines.find((l) => re.test(l));
        if (hit !== undefined) return done(() => resolve(hit));
        if (exited) return done(() => reject(new Error(`daemon exited before ${re}:\n${lines.join("\n")}`)));
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`timed out waiting for ${re}:\n${lines.join("\n")}`))),
        scaled(timeoutMs),
      );
      const done = (f: () => void) => {
        clearTimeout(timer);
        listeners.delete(check);
        f();
      };
      listeners.add(check);
      check();
    });

  let stopped: Promise<number> | undefined;
  const stop = (signal: Deno.Signal = "SIGTERM") => {
    stopped ??= (async () => {
      try {
        process.kill(signal);
      } catch { /* already exited */ }
      const s = await status;
      await pump;
      return s.code;
    })();
    return stopped;
  };

  const daemon: Daemon = {
    process,
    lines,
    waitForLine,
    stop,
    async [Symbol.asyncDispose]() {
      if (!stopped) {
        try {
          process.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await status;
      await pump;
    },
  };
  return daemon;
}

/** A free TCP port on loopback (bound, read, released). */
export function freePort(hostname = "127.0.0.1"): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A free UDP port on a loopback address (bound, read, released). */
export function freeUdpPort(hostname: "127.0.0.1" | "::1" = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(hostname === "::1" ? "udp6" : "udp4");
    socket.once("error", reject);
    socket.bind(0, hostname, () => {
      const port = socket.address().port;
      socket.close(() => resolve(port));
    });
  });
}

/** A UDP receiver on loopback collecting datagrams as text. */
export interface UdpReceiver extends AsyncDisposable {
  readonly port: number;
  readonly messages: string[];
  waitFor(n: number, timeoutMs?: number): Promise<string[]>;
}

/** Binds a UDP socket on the given loopback address with an ephemeral port. */
export function udpReceiver(address: "127.0.0.1" | "::1"): Promise<UdpReceiver> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(address === "::1" ? "udp6" : "udp4");
    const messages: string[] = [];
    const waiters = new Set<() => void>();
    socket.on("message", (msg) => {
      messages.push(new TextDecoder().decode(msg));
      for (const w of waiters) w();
    });
    socket.once("error", reject);
    socket.bind(0, address, () => {
      const port = socket.address().port;
      resolve({
        port,
        messages,
        waitFor: (n, timeoutMs = 5000) =>
          new Promise((res, rej) => {
            const check = () => {
              if (messages.length >= n) {
                clearTimeout(timer);
                waiters.delete(check);
                res(messages.slice(0, n));
              }
            };
            const timer = setTimeout(() => {
              waiters.delete(check);
              rej(
                new Error(
                  `timed out waiting for ${n} datagrams on ${address}:${port}, got ${messages.length}`,
                ),
              );
            }, scaled(timeoutMs));
            waiters.add(check);
            check();
          }),
        [Symbol.asyncDispose]: () => new Promise<void>((r) => socket.close(() => r())),
      });
    });
  });
}
