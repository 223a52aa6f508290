/**
 * Command-line parsing, compatible with the original:
 * `flowd-go [-h|--help] [--conf PATH] [--log-level LEVEL] [--log-time] run|version|conf|help`.
 * Global flags may come before or after the command.
 */
import { parseArgs } from "node:util";
import { UsageError } from "../core/errors.ts";
import { type CliLogLevel, LOG_LEVELS } from "../core/log.ts";
import { DEFAULT_CONFIG_PATH } from "../config/load.ts";

/** The commands, as word paths. */
export const COMMANDS = ["run", "version", "conf", "help"] as const;
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
  /** `conf --format`. */
  format: "yaml" | "json";
}

/** Parses argv (without the program name); throws `UsageError` on anything unknown or malformed. */
export function parseCli(argv: string[]): CliArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        help: { type: "boolean", short: "h" },
        conf: { type: "string" },
        "log-level": { type: "string" },
        "log-time": { type: "boolean" },
        format: { type: "string" },
      },
    });
  } catch (err) {
    throw new UsageError(cleanParseError(err));
  }
  const { values, positionals } = parsed;
  const [first, ...rest] = positionals;
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
  const format = values.format ?? "yaml";
  if (format !== "yaml" && format !== "json") {
    throw new UsageError(`invalid --format "${format}" (use yaml or json)`);
  }
  if (values.format !== undefined && command !== "conf") {
    throw new UsageError(`--format only applies to "conf"`);
  }
  if (values.conf === "") throw new UsageError("--conf needs a path");
  return {
    command,
    rest,
    help: values.help ?? false,
    conf: values.conf ?? DEFAULT_CONFIG_PATH,
    confGiven: values.conf !== undefined,
    logLevel: level as CliLogLevel,
    logTime: values["log-time"] ?? false,
    format,
  };
}

function cleanParseError(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  // node:util's messages end with a hint about "--" that does not apply here.
  return msg.split(". To specify a positional")[0]!.replace(/^Unknown option/, "unknown option").trim();
}
