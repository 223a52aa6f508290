/**
 * Command-line parsing, compatible with the original:
 * `flowd-go [-h|--help] [--conf PATH] [--log-level LEVEL] [--log-time] run|version|conf|reload|marker clean|stun sample|help`,
 * plus our `flows`, `status` and `doctor`.
 * Global flags may come before or after the command.
 */
import { UsageError } from "../core/errors.ts";
import { type FlagSpec, splitArgs } from "./argv.ts";
import { type CliLogLevel, LOG_LEVELS } from "../core/log.ts";
import { DEFAULT_CONFIG_PATH } from "../config/defaults.ts";
import { splitHostPort } from "../net/ip.ts";

/** The commands, as word paths. */
export const COMMANDS = [
  "run",
  "version",
  "conf",
  "reload",
  "flows",
  "status",
  "doctor",
  "marker clean",
  "stun sample",
  "help",
] as const;
export type Command = typeof COMMANDS[number] | "none";

/** Parsed command line. */
export interface CliArgs {
  command: Command;
  /** Words after the command (for `help <command>`). */
  rest: string[];
  help: boolean;
  conf: string;
  /** Whether --conf was given (the default path is then not required to exist). */
  confGiven: boolean;
  logLevel: CliLogLevel;
  logTime: boolean;
  /** `conf --format` (yaml or json), `stun sample --format` (text or json), `flows --format` (table or json). */
  format: "yaml" | "json" | "text" | "table";
  /** `flows`: what to show and how often. */
  flows: FlowsArgs;
  /** `stun sample --stun-server` (repeatable); empty when not given. */
  stunServers: string[];
  /** `stun sample --http-server` (repeatable); empty when not given. */
  httpServers: string[];
  /** `marker clean --target-interface` (repeatable); empty means every interface. */
  targetInterfaces: string[];
  /** `marker clean --remove-qdisc` (default true). */
  removeQdisc: boolean;
  /** `reload --pid`: the daemon to signal (default: the PID file's). */
  pid?: number;
}

/** The options of `flows`. */
export interface FlowsArgs {
  /** Refresh every `intervalS` seconds until interrupted. */
  watch: boolean;
  intervalS: number;
  /** Only flows of this experiment / activity (a name or an id). */
  experiment?: string;
  activity?: string;
  /** Only flows to this destination address (or address prefix/len). */
  dst?: string;
  /** The control socket, instead of the configuration's `controlSocket`. */
  socket?: string;
}

/** Groups of commands: the first word of a two-word command and its second words. */
const GROUPS: Record<string, readonly string[]> = { marker: ["clean"], stun: ["sample"] };

/** Boolean flags that also take cobra's `--flag=true|false` form, as the original's did. */
const BOOLEAN_FLAGS = ["log-time", "remove-qdisc"];

/** Rewrites `--flag=true` to `--flag` and `--flag=false` to `--no-flag` for the boolean flags. */
function normaliseBooleans(argv: string[]): string[] {
  return argv.map((arg) => {
    const m = /^--([a-z-]+)=(.*)$/.exec(arg);
    if (!m || !BOOLEAN_FLAGS.includes(m[1]!)) return arg;
    const value = m[2]!.toLowerCase();
    if (value === "true" || value === "1") return `--${m[1]}`;
    if (value === "false" || value === "0") return `--no-${m[1]}`;
    throw new UsageError(`invalid value "${m[2]}" for --${m[1]} (use true or false)`);
  });
}

/** The flags; global ones may come before or after the command. */
const FLAGS = {
  help: { type: "boolean", short: "h" },
  conf: { type: "string" },
  "log-level": { type: "string" },
  "log-time": { type: "boolean" },
  "no-log-time": { type: "boolean" },
  "target-interface": { type: "string", multiple: true },
  "remove-qdisc": { type: "boolean" },
  "no-remove-qdisc": { type: "boolean" },
  format: { type: "string" },
  "stun-server": { type: "string", multiple: true },
  "http-server": { type: "string", multiple: true },
  pid: { type: "string" },
  watch: { type: "boolean" },
  interval: { type: "string" },
  experiment: { type: "string" },
  activity: { type: "string" },
  dst: { type: "string" },
  socket: { type: "string" },
} as const satisfies Record<string, FlagSpec>;

/** Parses argv (without the program name); throws `UsageError` on anything unknown or malformed. */
export function parseCli(argv: string[]): CliArgs {
  const parsed = splitArgs(normaliseBooleans(argv), FLAGS);
  const { values, positionals } = parsed;
  let [first, ...rest] = positionals;
  const group = first === undefined ? undefined : GROUPS[first];
  if (group !== undefined) {
    const second = rest[0];
    if (second === undefined || !group.includes(second)) {
      const what = second === undefined ? "needs a subcommand" : `has no subcommand "${second}"`;
      throw new UsageError(`"${first}" ${what} (${group.map((g) => `${first} ${g}`).join(", ")})`);
    }
    first = `${first} ${second}`;
    rest = rest.slice(1);
  }
  let command: Command = "none";
  if (first !== undefined) {
    if (!(COMMANDS as readonly string[]).includes(first)) {
      throw new UsageError(`unknown command "${first}" (commands: ${COMMANDS.join(", ")})`);
    }
    command = first as Command;
  }
  if (rest.length > 0 && command !== "help") {
    throw new UsageError(`unexpected argument "${rest[0]}" after "${command}"`);
  }
  const level = values["log-level"] ?? "info";
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(`invalid --log-level "${level}" (use one of ${LOG_LEVELS.join(", ")})`);
  }
  const formatsOf: Partial<Record<Command, string[]>> = {
    conf: ["yaml", "json"],
    "stun sample": ["text", "json"],
    flows: ["table", "json"],
    status: ["text", "json"],
  };
  if (values.format !== undefined && formatsOf[command] === undefined) {
    throw new UsageError(`--format only applies to "conf", "flows", "status" and "stun sample"`);
  }
  const formats = formatsOf[command] ?? ["yaml", "json"];
  const format = values.format ?? formats[0]!;
  if (!formats.includes(format)) {
    throw new UsageError(`invalid --format "${format}" (use ${formats.join(" or ")})`);
  }
  const stunServers = values["stun-server"] ?? [];
  const httpServers = values["http-server"] ?? [];
  if ((stunServers.length || httpServers.length) && command !== "stun sample") {
    throw new UsageError(`--stun-server and --http-server only apply to "stun sample"`);
  }
  for (const server of stunServers) {
    try {
      splitHostPort(server);
    } catch {
      throw new UsageError(`invalid --stun-server "${server}" (use host:port, or [ipv6]:port)`);
    }
  }
  for (const url of httpServers) {
    if (!/^https?:\/\/[^/]/.test(url) || !URL.canParse(url)) {
      throw new UsageError(`invalid --http-server "${url}" (use an http:// or https:// URL)`);
    }
  }
  const targetInterfaces = values["target-interface"] ?? [];
  const qdiscFlag = values["remove-qdisc"] !== undefined || values["no-remove-qdisc"] !== undefined;
  if ((targetInterfaces.length || qdiscFlag) && command !== "marker clean") {
    throw new UsageError(`--target-interface and --remove-qdisc only apply to "marker clean"`);
  }
  for (const name of targetInterfaces) {
    if (!/^[^\s/]{1,15}$/.test(name)) throw new UsageError(`invalid --target-interface "${name}"`);
  }
  if (values.conf === "") throw new UsageError("--conf needs a path");
  let pid: number | undefined;
  if (values.pid !== undefined) {
    if (command !== "reload") throw new UsageError(`--pid only applies to "reload"`);
    if (!/^[1-9]\d{0,9}$/.test(values.pid)) {
      throw new UsageError(`invalid --pid "${values.pid}" (a process id)`);
    }
    pid = Number(values.pid);
  }
  const flows = flowsArgs(values, command);
  return {
    command,
    rest,
    flows,
    help: values.help ?? false,
    conf: values.conf ?? DEFAULT_CONFIG_PATH,
    confGiven: values.conf !== undefined,
    logLevel: level as CliLogLevel,
    logTime: (values["log-time"] ?? false) && !values["no-log-time"],
    format: format as CliArgs["format"],
    stunServers,
    httpServers,
    targetInterfaces,
    removeQdisc: !values["no-remove-qdisc"],
    ...(pid !== undefined ? { pid } : {}),
  };
}

function flowsArgs(
  values: {
    watch?: boolean;
    interval?: string;
    experiment?: string;
    activity?: string;
    dst?: string;
    socket?: string;
  },
  command: Command,
): FlowsArgs {
  const given = (["watch", "interval", "experiment", "activity", "dst", "socket"] as const).filter((k) =>
    values[k] !== undefined
  );
  if (
    given.length > 0 && command !== "flows" && !(command === "status" && given.every((g) => g === "socket"))
  ) {
    throw new UsageError(
      `--${given[0]} only applies to "flows"${given[0] === "socket" ? ' and "status"' : ""}`,
    );
  }
  let intervalS = 2;
  if (values.interval !== undefined) {
    intervalS = Number(values.interval);
    if (!/^\d+(\.\d+)?$/.test(values.interval) || intervalS < 0.2 || intervalS > 3600) {
      throw new UsageError(`invalid --interval "${values.interval}" (seconds, 0.2 to 3600)`);
    }
  }
  for (const k of ["experiment", "activity", "dst", "socket"] as const) {
    if (values[k] === "") throw new UsageError(`--${k} needs a value`);
  }
  return {
    watch: values.watch ?? false,
    intervalS,
    ...(values.experiment !== undefined ? { experiment: values.experiment } : {}),
    ...(values.activity !== undefined ? { activity: values.activity } : {}),
    ...(values.dst !== undefined ? { dst: values.dst } : {}),
    ...(values.socket !== undefined ? { socket: values.socket } : {}),
  };
}
