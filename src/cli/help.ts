/** Help texts. */
import { DEFAULT_CONFIG_PATH } from "../config/load.ts";
import { BUILTIN_NAMES, BUILTIN_PREFIX } from "../config/builtin.ts";
import type { Command } from "./args.ts";

const FLAGS = `Flags (before or after the command):
  -h, --help             show help
      --conf PATH        configuration file (default ${DEFAULT_CONFIG_PATH});
                         ${
  BUILTIN_NAMES.map((n) => BUILTIN_PREFIX + n).join(", ")
} selects a built-in configuration
      --log-level LEVEL  trace, debug, info, warn or error (default info)
      --log-time         start each log line with a timestamp`;

const MAIN = `flowd-go: the SciTags flow and packet marking daemon

Usage:
  flowd-go [flags] <command>

Commands:
  run       start the daemon (stops on SIGTERM or SIGINT, reloads its configuration on SIGHUP)
  conf      print the effective configuration, defaults included
  version   print the version and the commit it was built from
  help      show help for a command

${FLAGS}

See flowd-go(1) for the configuration reference.
`;

const PER_COMMAND: Record<string, string> = {
  run: `Usage: flowd-go [flags] run

Starts the daemon with the configuration given by --conf. It runs until SIGTERM or SIGINT, and
re-reads its configuration on SIGHUP (a configuration that does not load is reported and ignored).
Exits non-zero if it cannot start.

${FLAGS}
`,
  conf: `Usage: flowd-go [flags] conf [--format yaml|json]

Reads the configuration given by --conf, applies the defaults and prints the result (YAML by default).
Exits non-zero, naming the key and line, if the configuration is invalid.

${FLAGS}
`,
  version: `Usage: flowd-go version

Prints the version and the commit flowd-go was built from.
`,
  help: `Usage: flowd-go help [command]

Shows help for flowd-go or for one command.
`,
};

/** The help text for the program or one command. */
export function helpText(command?: Command | string): string {
  if (command && command !== "none" && PER_COMMAND[command]) return PER_COMMAND[command];
  return MAIN;
}
