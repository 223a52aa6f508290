/** Help texts. */
import { DEFAULT_CONFIG_PATH } from "../config/defaults.ts";
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
  run          start the daemon (stops on SIGTERM or SIGINT, reloads its configuration on SIGHUP)
  conf         print the effective configuration, defaults included
  reload       make the running daemon reload its configuration, and say whether it did
  flows        list the running daemon's open flows with what the marker did (packets, bytes, never seen)
  status       show what the running daemon runs and how each component is doing
  doctor       check that this host can run the configuration (kernel, BPF, capabilities, interfaces, ports)
  marker clean remove flowd-go's eBPF marking hooks from the interfaces (after a crash; run at service stop)
  stun sample  show the private-to-public address mapping fireflies would use, and how it was found
  version      print the version and the commit it was built from
  help         show help for a command

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
  reload: `Usage: flowd-go [flags] reload [--pid PID]

Sends SIGHUP to the running daemon (the PID given, else the one in its PID file) and waits for the outcome
of that reload, which the daemon records next to its PID file (<pidPath>.reload). Prints it; exits 0 when
the new configuration was applied, 1 when it was refused (the daemon keeps running with the previous one)
or no outcome came within 60 s. The systemd unit's ExecReload, so that systemctl reload fails for a
configuration that cannot be applied.

  --pid PID    the daemon's process id (the unit passes $MAINPID)

${FLAGS}
`,
  flows: `Usage: flowd-go [flags] flows [--format table|json] [--watch [--interval S]]
                    [--experiment E] [--activity A] [--dst ADDRESS[/LEN]] [--socket PATH]

Asks the running daemon, through its control socket (controlSocket in the configuration), for its open
flows: age, protocol, local and peer address:port, experiment and activity (registry names and ids), the tag
the marker writes, packets and bytes it marked, the rate since the previous listing, and when the last marked
packet left. "never seen" means the marker holds the flow but no packet matched it: the announced 5-tuple is
not the traffic's. Exits 1 with a plain message when no daemon runs.

  --format table|json  output (default table; json is the daemon's answer, protocol in flowd-go(1))
  --watch              refresh until interrupted, every --interval seconds (default 2)
  --experiment E       only this experiment (name or id); --activity A likewise
  --dst ADDRESS[/LEN]  only flows to this peer address or prefix
  --socket PATH        the control socket, instead of the configuration's

${FLAGS}
`,
  status: `Usage: flowd-go [flags] status [--format text|json] [--socket PATH]

Asks the running daemon, through its control socket, what it runs: version and commit, uptime, the
configuration file, every component with its state (running, degraded or failed, and why), per backend the
events handled, dropped and failed, each component's own counters (inputs rejected by reason, ...), the
marker's hooks per interface, enrichment samples and the SciTags registry in use. Exits 0 when everything
runs, 3 when a component is degraded or failed, 1 when no daemon answers.

  --format text|json  output (default text)
  --socket PATH       the control socket, instead of the configuration's

${FLAGS}
`,
  doctor: `Usage: flowd-go [flags] doctor

Checks what the configuration given by --conf needs from this host, one line per check with pass, WARN or
FAIL and the fix: kernel version and TCX, capabilities, the BPF syscall (a test program is loaded), libbpf,
memlock, BTF, bpffs, cgroup v2, the target interfaces (or what discoverInterfaces would pick), the pipe
directory, the API and prometheus ports, the collector's name. With the marker on, it loads the marker and
attaches it to a test interface in a private network namespace (then removes both), so that "the marker
works here" is proven. Needs no running daemon. Exits 0 when everything the configuration needs holds, 1
otherwise.

${FLAGS}
`,
  conf: `Usage: flowd-go [flags] conf [--format yaml|json]

Reads the configuration given by --conf, applies the defaults and prints the result (YAML by default).
Exits non-zero, naming the key and line, if the configuration is invalid.

${FLAGS}
`,
  "stun sample": `Usage: flowd-go [flags] stun sample [--stun-server HOST:PORT]... [--http-server URL]...
                          [--format text|json]

Finds the public addresses the firefly backend would put into fireflies instead of the private source
addresses of this host, exactly as the backend does at start: the addresses of the default-route
interfaces (IPv4 and IPv6), backends.firefly.stun.manualMapping, then HTTP services, then STUN servers.
Prints every address, what it maps to and how that was found, with every query made.

The services and timeouts come from backends.firefly.stun in the configuration (--conf; without --conf the
default file is read if it exists). --stun-server and --http-server replace the configured lists; without
them and without a stun section, the STUN server is stun.l.google.com:3478 as in the original.
Exits 1 if the interfaces cannot be listed, 0 otherwise (also when an address stays unmapped).

  --stun-server HOST:PORT  a STUN server ([ipv6]:port for IPv6 literals); repeatable
  --http-server URL        an HTTP service answering with the caller's address; repeatable
  --format text|json       output format (default text)

${FLAGS}
`,
  "marker clean": `Usage: flowd-go [flags] marker clean [--target-interface IF]... [--remove-qdisc=true|false]

Removes the marker's hooks from every interface, or from the ones named: its TCX links and tc filters,
and the clsact qdiscs it created (unless --remove-qdisc=false). Hooks of other programs, and qdiscs that
flowd-go did not create, are never touched. Prints one line per thing removed, or "nothing to clean".
Exits 0 when nothing is left to clean, 1 if an interface could not be cleaned (or does not exist).

  --target-interface IF    clean only this interface; repeatable (default: every interface)
  --remove-qdisc BOOL      also delete the clsact qdiscs the marker created (default true)

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
  const key = command === "stun" ? "stun sample" : command === "marker" ? "marker clean" : command;
  const text = key && key !== "none" ? PER_COMMAND[key] : undefined;
  if (text !== undefined) return text;
  return MAIN;
}
